"""The "buy again" baseline (serving.evaluation.buy_again) of a vocabulary whose items are engaged
again: a user's re-bought items first, popularity after; the canary and the main command's
summary report it beside popularity only when the vocabulary allows repeats, and the gate does
not ask a candidate to beat it."""

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from assets.records import CanaryRecord
from events.contract import conform
from orchestration.report import print_summary, surface_summary
from serving.evaluation.buy_again import (
    BUY_AGAIN,
    baseline_figures,
    baseline_listers,
    buy_again_lists,
)
from serving.evaluation.gate import GatePolicy, baseline_rules

DAY = date(2026, 3, 8)
START = datetime(2026, 3, 1, tzinfo=UTC)


def _log(purchases: list[tuple[int, int, int]]) -> pd.DataFrame:
    """(user, item, hours after START) purchases, one session each."""
    rows = [
        (user, item, "web", "purchase", START + timedelta(hours=h), n)
        for n, (user, item, h) in enumerate(purchases, start=1)
    ]
    return conform(pd.DataFrame(rows, columns=["user_id", "item_id", "surface", "outcome", "event_ts", "session_id"]))


@pytest.fixture
def history() -> pd.DataFrame:
    # user 1 re-buys milk (10) three times and bread (11) twice, eggs (12) once; bread after milk,
    # so bread leads eggs but not milk; item 50 is what everyone else buys, 51 second
    own = [(1, 10, 1), (1, 10, 30), (1, 10, 60), (1, 11, 70), (1, 11, 90), (1, 12, 100)]
    others = [(u, 50, u) for u in range(2, 12)] + [(u, 51, u) for u in range(2, 6)]
    return _log(own + others)


def test_buy_again_ranks_a_users_rebought_items_first_then_popularity(history):
    lists = buy_again_lists(history, [1, 99], k=5, engaged=["purchase"])
    assert lists[0] == [10, 11, 12, 50, 51]  # most bought, then popular to fill
    assert lists[1] == [50, 51, 10, 11, 12]  # a user without history: popularity
    # recency breaks a tie: two items bought twice, the later one first
    tie = _log([(1, 20, 1), (1, 20, 2), (1, 21, 5), (1, 21, 6)])
    assert buy_again_lists(tie, [1], k=2, engaged=["purchase"])[0] == [21, 20]


def test_the_yardstick_replays_the_buy_again_lists(history):
    lister = baseline_listers(history, {}, ["purchase"], repeats=True)[BUY_AGAIN]
    assert lister([1, 99], "web", 5, [None, None]) == buy_again_lists(history, [1, 99], k=5, engaged=["purchase"])
    # popularity too lists what the user bought before when the vocabulary allows repeats
    popular = baseline_listers(history, {}, ["purchase"], repeats=True)["popularity"]
    assert popular([1], "web", 3, [None]) == [[50, 51, 10]]


def _canary(baselines) -> CanaryRecord:
    return CanaryRecord(
        candidate="v2",
        champion="v1",
        metrics={"candidate": {"recall@100": 0.2}, "champion": {"recall@100": 0.1}},
        baselines=baselines,
        outcomes=["purchase"],
        passed=True,
    )


@pytest.mark.parametrize("repeats", [True, False])
def test_the_canary_and_the_summary_report_buy_again_only_when_repeats_are_allowed(history, repeats, capsys):
    day = _log([(1, 10, 24 * 7 + 1), (1, 50, 24 * 7 + 2)])
    figures = baseline_figures(history, {}, day, repeats=repeats, k=4, outcomes=["purchase"], engaged=["purchase"])
    assert set(figures) == ({"popularity", BUY_AGAIN} if repeats else {"popularity"})
    assert set(baseline_listers(history, {}, ["purchase"], repeats=repeats)) == set(figures)
    if repeats:
        # user 1 buys milk again and the popular 50: buy again's top 4 has both
        assert figures[BUY_AGAIN]["recall@4"] == 1.0
    entry = surface_summary(_canary(figures), "v2", DAY)
    assert (BUY_AGAIN in entry["yardstick"]) is repeats
    assert (f"{BUY_AGAIN}_recall@100" in entry) is repeats
    print_summary({"surfaces": {"web": entry}})
    assert ("buy again" in capsys.readouterr().out) is repeats


def test_the_gate_does_not_ask_a_candidate_to_beat_buy_again():
    rules = baseline_rules(
        {"user_auc": 0.6},
        {"popularity": {"user_auc": 0.55}, BUY_AGAIN: {"user_auc": 0.9}},
        GatePolicy(yardstick="user_auc"),
    )
    assert [r.rule for r in rules] == ["beats popularity"]
    assert all(r.passed for r in rules)
