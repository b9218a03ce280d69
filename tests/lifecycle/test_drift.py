"""Outcome-mix drift statistics, on hand-computed cases and on the simulator's injected drift."""

import math
from dataclasses import replace
from datetime import timedelta

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
