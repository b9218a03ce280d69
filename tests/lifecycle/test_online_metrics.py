"""Online metrics from a serving log, and the experiment arms: rates per 1,000 served impressions
with bootstrap intervals over users, Gini of exposure, the canary comparison, stable arm
assignment independent of the canary's hash, and the baseline policies."""

import numpy as np
import pandas as pd
import pytest

from events.serving_log import SERVING_LOG_COLUMNS, ServingLogTable, conform_serving_log
from monitoring.online import compare_groups, gini, group_metrics, metrics_by
from serving.service.versions import canary_fraction
from world.experiments import (
    EXPERIMENT_ARMS,
    Arm,
    ArmRouter,
    PopularityPolicy,
    RandomPolicy,
    Request,
    Served,
    assign_arm,
    random_items,
    select_arms,
)


def _log(rows):
    base = {
        "session_id": 1,
        "ts": pd.Timestamp("2026-01-05 10:00", tz="UTC"),
        "surface": "homefeed",
        "version": "v1",
        "arm": "pinrec",
        "served_by": "champion",
        "examined": True,
    }
    return conform_serving_log(pd.DataFrame([{**base, **r} for r in rows]))


def test_gini_is_zero_for_equal_exposure_and_near_one_for_a_single_item():
    assert gini(np.ones(100)) == pytest.approx(0.0, abs=1e-9)
    concentrated = np.zeros(100)
    concentrated[0] = 50
    assert gini(concentrated) == pytest.approx(0.99, abs=1e-9)


def test_rates_are_per_1000_served_impressions_and_cover_the_catalogue():
    rows = [
        {
            "user_id": u,
            "position": p,
            "item_id": 10 * u + p,
            "outcome": "save" if p == 0 else ("click" if p == 1 else "impression"),
        }
        for u in range(20)
        for p in range(10)
    ]
    m = group_metrics(_log(rows), catalogue_size=1000)
    assert m["impressions"] == 200 and m["users"] == 20
    assert m["saves_per_1k"] == pytest.approx(100.0) and m["clicks_per_1k"] == pytest.approx(100.0)
    assert m["hides_per_1k"] == 0.0 and m["coverage"] == pytest.approx(0.2)
    assert m["ci95_saves_per_1k"] == pytest.approx(0.0)  # every user saves exactly one of ten


def test_the_canary_comparison_finds_a_real_difference_and_its_interval_excludes_zero():
    rng = np.random.default_rng(0)

    def group(rate, role, users):
        return [
            {
                "user_id": u,
                "position": p,
                "item_id": p,
                "served_by": role,
                "outcome": "click" if rng.random() < rate else "impression",
            }
            for u in users
            for p in range(20)
        ]

    log = _log(group(0.10, "champion", range(200)) + group(0.05, "canary", range(200, 400)))
    c = compare_groups(log[log["served_by"] == "champion"], log[log["served_by"] == "canary"])
    assert c.a == pytest.approx(100, abs=10) and c.b == pytest.approx(50, abs=10)
    assert c.ci95_high < 0 < c.a and c.users_a == c.users_b == 200
    same = compare_groups(log[log["served_by"] == "champion"], log[log["served_by"] == "champion"])
    assert same.ci95_low < 0 < same.ci95_high


def test_metrics_by_surface_and_arm_and_the_serving_log_round_trips(tmp_path):
    log = _log(
        [
            {"user_id": 1, "position": 0, "item_id": 5, "outcome": "save", "arm": "a"},
            {"user_id": 2, "position": 0, "item_id": 6, "outcome": "impression", "arm": "b", "served_by": "canary"},
        ]
    )
    groups = metrics_by(log, ("surface", "arm"), 100)
    assert set(groups) == {("homefeed", "a"), ("homefeed", "b")}
    assert groups[("homefeed", "b")]["canary_share"] == 1.0
    table = ServingLogTable(tmp_path)
    table.write_day(pd.Timestamp("2026-01-05").date(), log)
    back = table.read_day(pd.Timestamp("2026-01-05").date())
    assert list(back.columns) == list(SERVING_LOG_COLUMNS) and back.equals(log)


def test_arm_assignment_is_stable_shares_users_and_is_independent_of_the_canary_hash():
    users = range(20_000)
    first = [assign_arm(u, EXPERIMENT_ARMS).name for u in users]
    assert first == [assign_arm(u, EXPERIMENT_ARMS).name for u in users]
    counts = pd.Series(first).value_counts()
    assert set(counts.index) == {a.name for a in EXPERIMENT_ARMS}
    assert counts.min() > 0.8 * 20_000 / len(EXPERIMENT_ARMS)
    in_canary = pd.Series([canary_fraction("homefeed", u) < 0.25 for u in users])
    by_arm = in_canary.groupby(pd.Series(first)).mean()
    assert by_arm.between(0.2, 0.3).all()  # the canary takes the same share of every arm


def test_popularity_serves_recent_engagements_without_the_users_own():
    events = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 3, 4],
            "item_id": [7, 7, 8, 9, 7],
            "surface": "homefeed",
            "outcome": ["click", "save", "click", "impression", "hide"],
        }
    )
    policy = PopularityPolicy().fit(events, "d")
    [served] = policy.serve([Request(5, "homefeed", 2)], None)
    assert served.items == [7, 8]
    mine = pd.DataFrame(
        {
            "item_id": [7],
            "outcome": ["click"],
            "surface": ["homefeed"],
            "event_ts": [pd.Timestamp("2026-01-05", tz="UTC")],
        }
    )
    [served] = policy.serve([Request(5, "homefeed", 2, mine)], None)
    assert served.items == [8]


def test_the_random_arm_serves_distinct_uniform_items_without_the_users_engaged_ones():
    mine = pd.DataFrame(
        {"item_id": [3, 4], "outcome": ["click", "impression"], "surface": "homefeed", "event_ts": pd.Timestamp.now()}
    )
    requests = [Request(u, "homefeed", 10, mine if u == 0 else None) for u in range(400)]
    policy = RandomPolicy(n_items=50, seed=1)
    served = policy.serve(requests, None)
    assert served == RandomPolicy(n_items=50, seed=1).serve(requests, None)  # seeded
    assert policy.serve(requests[:1], None)[0].items != RandomPolicy(50, 1).serve(requests[:1], None)[0].items
    assert all(len(s.items) == 10 == len(set(s.items)) for s in served)
    assert 3 not in served[0].items  # engaged today: left out; only shown: may come again
    assert served[0].propensities == [1 / 50] * 10 and served[0].served_by == "random"
    counts = np.bincount([i for s in served for i in s.items], minlength=50)
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()  # uniform
    # the policy loop's draw (k + 20 drawn, the excluded dropped) is the same function's
    rng, again = np.random.default_rng(5), np.random.default_rng(5)
    drawn = again.choice(100, size=30, replace=False)
    assert random_items(rng, 100, 10, [int(drawn[0])], spare=20) == [int(i) for i in drawn[1:11]]


def test_a_run_names_the_arms_it_compares():
    assert [a.name for a in select_arms(["random", "pinrec"])] == ["pinrec", "random"]  # the arms' order
    assert select_arms(None) == list(EXPERIMENT_ARMS) and "random" in {a.name for a in EXPERIMENT_ARMS}
    with pytest.raises(ValueError, match=r"unknown arms \['nope'\]; the arms are popularity, sasrec"):
        select_arms(["pinrec", "nope"])


def test_the_router_sends_each_user_to_its_arms_policy_with_the_arms_weights():
    seen = []

    class Echo:
        def __init__(self, name):
            self.name = name

        def serve(self, requests, weights):
            seen.append((self.name, [r.user_id for r in requests], weights))
            return [Served([r.user_id], self.name, self.name) for r in requests]

    arms = [Arm("x", "p", {"click": 1.0}), Arm("y", "q")]
    router = ArmRouter(arms, {"p": Echo("p"), "q": Echo("q")})
    served = router.serve([Request(u, "homefeed", 3) for u in range(50)])
    assert all(s.arm == router.arm_of(u).name and s.items == [u] for u, s in enumerate(served))
    assert {name for name, _, _ in seen} == {"p", "q"} and dict((n, w) for n, _, w in seen)["p"] == {"click": 1.0}
    with pytest.raises(ValueError, match="not given"):
        ArmRouter([Arm("z", "missing")], {})
