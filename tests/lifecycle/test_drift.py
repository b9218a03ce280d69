"""Outcome-mix drift statistics, on hand-computed cases and on the simulator's injected drift."""

import math
from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import pytest

from events.contract import OUTCOMES
from monitoring.drift import compare_outcome_mix, js_divergence, outcome_counts, psi
from tests.helpers import SMALL_WORLD, ingest_world


def test_divergences_are_zero_for_identical_mixes_and_match_hand_computation():
    assert js_divergence([10, 30], [1, 3]) == pytest.approx(0.0, abs=1e-9)
    assert psi([10, 30], [1, 3]) == pytest.approx(0.0, abs=1e-9)
    # p = (0.5, 0.5), q = (0.9, 0.1): PSI = 0.4 ln(5/9) + (-0.4) ln(5)
    assert psi([5, 5], [9, 1]) == pytest.approx(-0.4 * math.log(0.5 / 0.9) + 0.4 * math.log(0.5 / 0.1), rel=1e-4)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0, abs=1e-4)  # disjoint: base-2 JS is 1


def _counts(rows: dict[str, dict[str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows).T.reindex(columns=list(OUTCOMES), fill_value=0).fillna(0).astype("int64")


def test_only_surfaces_with_enough_rows_and_a_large_shift_are_flagged():
    ref = _counts(
        {
            "homefeed": {"impression": 9000, "click": 800, "save": 200},
            "related": {"impression": 9000, "click": 800, "save": 200},
            "search": {"impression": 900, "click": 100},
        }
    )
    cur = _counts(
        {
            "homefeed": {"impression": 9000, "click": 950, "save": 50},  # saves collapsed
            "related": {"impression": 9010, "click": 795, "save": 195},  # noise
            "search": {"impression": 400, "click": 500},
        }
    )  # big shift, 900 rows
    reports = {
        r.surface: r for r in compare_outcome_mix(cur, ref, js_threshold=0.002, psi_threshold=0.02, min_rows=1000)
    }
    assert reports["homefeed"].drifted
    assert not reports["related"].drifted
    assert not reports["search"].drifted  # too few rows to tell
    assert reports["search"].js > reports["homefeed"].js > reports["related"].js
    assert reports["homefeed"].current_mix == {"impression": 0.9, "click": 0.095, "save": 0.005}


def test_injected_outcome_drift_shows_after_the_drift_day_only(tmp_path):
    drift_day = SMALL_WORLD.start_date + timedelta(days=2)
    world = replace(
        SMALL_WORLD, events_per_day=20_000, drift_day=drift_day, drift_kind="outcome_mix", drift_strength=0.8
    )
    table = ingest_world(tmp_path, world)
    days = table.days()
    ref = outcome_counts(table, days[:1])
    before = compare_outcome_mix(outcome_counts(table, [days[1]]), ref, js_threshold=0.002, psi_threshold=0.05)
    after = compare_outcome_mix(outcome_counts(table, [days[2]]), ref, js_threshold=0.002, psi_threshold=0.05)
    assert not any(r.drifted for r in before), [(r.surface, r.js, r.psi) for r in before]
    assert any(r.drifted for r in after), [(r.surface, r.js, r.psi) for r in after]
    assert max(r.psi for r in after) > 5 * max(r.psi for r in before)


# ---- one shift, one retrain (monitoring.shift): synthetic outcome mixes, a champion per retrain
SHIFT_MIXES = {  # expected engaged outcomes per day: before day 10, from day 10, from day 20
    0: {"click": 800, "save": 200, "hide": 100},
    10: {"click": 800, "save": 40, "hide": 300},  # saves rarer, hides more common (outcome_mix)
    20: {"click": 500, "save": 40, "hide": 700},  # a second, different shift
}


def _play_shifts(promote: bool, with_memory: bool = True, days: int = 30, window: int = 7) -> list[int]:
    """Days (1..days) on which the sensor's rule requests a retrain. A retrain on day D fine-tunes on
    the `window` days before D; with `promote` its model becomes the champion at once."""
    import numpy as np

    from monitoring.shift import ShiftMemory, after_judgement, reference_days

    rng = np.random.default_rng(7)
    start = date(2026, 1, 1)
    day_of = [start + timedelta(days=i) for i in range(days)]
    counts = {}
    for n, d in enumerate(day_of, start=1):
        mix = SHIFT_MIXES[max(k for k in SHIFT_MIXES if k <= n)]
        p = np.array(list(mix.values()), dtype=float)
        counts[d] = dict(zip(mix, rng.multinomial(int(p.sum()), p / p.sum())))
    champion_window = day_of[:3]  # the first champion: trained on days 1-3
    memory, fired = ShiftMemory(), []
    for n, newest in enumerate(day_of[3:], start=4):
        reference = reference_days(champion_window, day_of[: n - 1], newest, memory) if with_memory else champion_window
        ref = _counts({"homefeed": {o: sum(counts[d][o] for d in reference) for o in ("click", "save", "hide")}})
        cur = _counts({"homefeed": counts[newest]})
        [report] = compare_outcome_mix(cur, ref, js_threshold=0.01, psi_threshold=0.1, min_rows=200)
        if report.drifted:
            fired.append(n)
            if promote:
                champion_window = [d for d in day_of if newest - timedelta(days=window) <= d < newest]
        memory = after_judgement(memory, champion_window, newest, report.drifted)
    return fired


@pytest.mark.parametrize("promote", [True, False])
def test_a_persistent_shift_asks_for_one_retrain_and_a_different_shift_for_another(promote):
    assert _play_shifts(promote) == [10, 20]  # nothing before the shift, once per shift


def test_without_the_shift_memory_every_promoted_champion_asks_again():
    # the rule of before: each champion after the shift is judged against its own (pre-shift) window
    assert len([d for d in _play_shifts(promote=True, with_memory=False) if 10 <= d < 20]) >= 4


def test_the_shift_is_forgotten_once_the_champion_learned_only_from_it():
    from monitoring.shift import ShiftMemory, reference_days, settled, since_shift

    d = [date(2026, 1, 1) + timedelta(days=i) for i in range(20)]
    memory = ShiftMemory(d[10])
    assert reference_days(d[3:10], d[:13], d[13], memory) == d[10:13]  # the shift's own days
    assert reference_days(d[3:10], d[:11], d[10], memory) == []  # none yet on the shift's first day
    assert reference_days(d[2:5], d[:19], d[19], memory) == d[16:19]  # at most the window's length
    assert settled(memory, d[10:17]) == ShiftMemory() and settled(memory, d[9:16]) == memory
    assert reference_days(d[10:17], d[:18], d[18], memory) == d[10:17]  # the champion caught up
    assert since_shift(d[5:13], memory) == d[10:13] and since_shift(d[5:7], ShiftMemory()) == d[5:7]
    assert ShiftMemory.from_cursor(memory.to_cursor()) == memory and ShiftMemory.from_cursor(None) == ShiftMemory()


def test_an_online_drop_within_its_sampling_error_does_not_fire_and_a_significant_one_does():
    from orchestration.defs.drift_sensor import DRIFT_Z, RECALL_DROP_THRESHOLD, dropped, trailing_drop

    # a canary sample of a few hundred users: recall@100 near 0.25 with a standard error of 0.03
    trailing = [(0.26, 0.03), (0.24, 0.03), (0.25, 0.03)]
    relative, z = trailing_drop(trailing, 0.19, 0.03)
    assert relative > RECALL_DROP_THRESHOLD and z < DRIFT_Z  # 24% lower, but 1.9 standard errors
    assert not dropped({"recall@100_drop": relative, "recall@100_drop_z": z}, "recall@100", RECALL_DROP_THRESHOLD)
    relative, z = trailing_drop([(v, 0.005) for v, _ in trailing], 0.19, 0.005)  # thousands of users
    assert z >= DRIFT_Z
    assert dropped({"recall@100_drop": relative, "recall@100_drop_z": z}, "recall@100", RECALL_DROP_THRESHOLD)
    # a significant but small drop is below the relative threshold: no retrain either
    relative, z = trailing_drop([(v, 0.001) for v, _ in trailing], 0.24, 0.001)
    assert z >= DRIFT_Z and not dropped({"recall@100_drop": relative, "recall@100_drop_z": z}, "recall@100", 0.2)


def test_a_trailing_drop_needs_enough_reference_days_and_counts_a_missing_error_as_exact():
    from orchestration.defs.drift_sensor import MIN_REFERENCE_DAYS, trailing_drop

    assert trailing_drop([(0.3, 0.01)] * (MIN_REFERENCE_DAYS - 1), 0.1, 0.01) is None
    assert trailing_drop([(0.3, 0.01), (float("nan"), 0.01)] * MIN_REFERENCE_DAYS, float("nan"), 0.0) is None
    relative, z = trailing_drop([(0.3, float("nan"))] * MIN_REFERENCE_DAYS, 0.15, float("nan"))
    assert math.isclose(relative, 0.5) and z == float("inf")
