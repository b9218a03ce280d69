"""The experiment's power (`monitoring.power`): CUPED on the pre-period, minimum detectable effects."""

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from monitoring.power import Z95, arm_rows, cuped_rate, linearized, mde, pre_period_covariate, users_of_events
from tests.helpers import SMALL_WORLD


def _users(rng, n, propensity, activity):
    impressions = rng.poisson(activity)
    return pd.DataFrame(
        {"impressions": impressions, "save": rng.binomial(impressions, propensity), "click": 0, "hide": 0},
        index=pd.RangeIndex(n, name="user_id"),
    )


def test_cuped_with_a_constant_covariate_is_the_plain_estimate():
    rng = np.random.default_rng(0)
    users = _users(rng, 300, rng.beta(1, 60, 300), rng.gamma(2.0, 40.0, 300))
    plain = 1000.0 * users["save"].sum() / users["impressions"].sum()
    for value in (0.0, 3.5):
        est = cuped_rate(users, pd.Series(value, index=users.index), "save", population_mean=value)
        assert est.rate_cuped == pytest.approx(plain, rel=1e-12) and est.rate == pytest.approx(plain, rel=1e-12)
        assert est.theta == 0.0 and est.se_cuped == pytest.approx(est.se, rel=1e-12)
    # the delta method's variance of a ratio of sums: var(L) / n with L of mean 0
    lin = linearized(users, "save")
    assert lin.mean() == pytest.approx(0.0, abs=1e-9)
    assert est.ci95 == pytest.approx(Z95 * lin.std(ddof=1) / np.sqrt(len(users)))


def test_cuped_has_smaller_variance_where_the_pre_period_predicts():
    """Replicated experiments on one population of users whose save propensity persists, half of
    them drawn into the arm each time: the CUPED estimate keeps the plain one's mean, its spread
    over replicates is smaller, and its standard error says so."""
    n, replicates = 800, 300
    rng = np.random.default_rng(1)
    plain, cuped, se_plain, se_cuped = [], [], [], []
    propensity, activity = rng.beta(0.8, 60.0, n), rng.gamma(1.5, 40.0, n)  # the users, fixed
    for _ in range(replicates):
        pre = _users(rng, n, propensity, 2 * activity)  # the warm-up days, every user
        x = pre_period_covariate(pre, "save", pre.index)
        arm = _users(rng, n, propensity, activity).loc[rng.random(n) < 0.5]  # the arm's users
        est = cuped_rate(arm, x, "save", population_mean=float(x.mean()))
        plain.append(est.rate), cuped.append(est.rate_cuped)
        se_plain.append(est.se), se_cuped.append(est.se_cuped)
    plain, cuped = np.array(plain), np.array(cuped)
    assert abs(cuped.mean() - plain.mean()) < 0.2 * plain.std()  # no bias worth the name
    assert cuped.std() < 0.8 * plain.std()  # the pre-period explains a good part of the spread
    assert np.mean(se_cuped) < 0.8 * np.mean(se_plain)
    # the standard errors are not overconfident (a little wide: the arm is half of a finite population)
    assert 0.9 * cuped.std() < np.mean(se_cuped) < 1.4 * cuped.std()
    assert 0.9 * plain.std() < np.mean(se_plain) < 1.4 * plain.std()


def test_cuped_on_the_simulated_world_is_never_wider_and_the_warm_up_predicts_little():
    """On the simulated world a user's saves of the warm-up days predict little of the next days'
    (a few engagements per user and day: corr(L, X) about 0.04-0.1 measured at 300 and 2,000
    users), so CUPED narrows the interval by about 1%: the power has to come from
    users and impressions. It is never wider."""
    from world.simulator import SimulatedWorld

    config = replace(SMALL_WORLD, n_users=300, n_items=500, events_per_day=15_000)
    world = SimulatedWorld(config)
    days = [config.start_date + timedelta(days=i) for i in range(4)]
    pre = users_of_events(pd.concat([world.day(d) for d in days[:2]]))
    now = users_of_events(pd.concat([world.day(d) for d in days[2:]]))
    x = pre_period_covariate(pre, "save", now.index)
    est = cuped_rate(now, x, "save", population_mean=float(x.mean()))
    assert est.rate_cuped == pytest.approx(est.rate)  # one arm of everyone: nothing to shift
    assert 0.9 * est.se < est.se_cuped <= est.se, est.to_dict()


def test_mde_at_80_percent_power():
    assert mde(1.0, 0.0) == pytest.approx(1.959964 + 0.841621, rel=1e-5)
    assert mde(1.0, 1.0) == pytest.approx(np.sqrt(2) * 2.801585, rel=1e-5)
    assert mde(1.0, 1.0, power=0.5) == pytest.approx(np.sqrt(2) * 1.959964, rel=1e-5)


def _experiment(seed: int = 2, n: int = 600) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(serving log, per-user pre-period) of three arms; `aa-2` saves 50% more."""
    rng = np.random.default_rng(seed)
    propensity = rng.beta(0.8, 40.0, n)
    pre = _users(rng, n, propensity, np.full(n, 100.0))
    arms = np.array(["pinrec", "aa-1", "aa-2"])[rng.integers(0, 3, n)]
    rows = []
    for user in range(n):  # a serving log: one row per served slot, the slot's outcome
        shown = rng.poisson(60)
        saved = rng.random(shown) < propensity[user] * (1.5 if arms[user] == "aa-2" else 1.0)
        rows.append(
            pd.DataFrame(
                {
                    "user_id": user,
                    "arm": arms[user],
                    "item_id": rng.integers(0, 50, shown),
                    "served_by": "champion",
                    "outcome": np.where(saved, "save", "impression"),
                }
            )
        )
    return pd.concat(rows, ignore_index=True), pre


def test_arm_rows_report_cuped_rates_and_mdes_against_the_reference_arm():
    log, pre = _experiment()
    by = {r["name"]: r for r in arm_rows(log, pre, ["pinrec", "aa-1", "aa-2"], 50)}
    assert by["pinrec"]["saves_per_1k_cuped_minus_pinrec"] == 0.0
    for r in by.values():
        assert r["ci95_saves_per_1k_cuped"] < r["ci95_saves_per_1k"]  # the pre-period predicts here
        assert r["mde_saves_per_1k"] > 0 and r["saves_per_1k_cuped"] > 0
    # aa-2 saves 50% more: more than its MDE; aa-1 is pinrec's twin: less
    assert by["aa-2"]["saves_per_1k_cuped_minus_pinrec"] > by["aa-2"]["mde_saves_per_1k"]
    assert abs(by["aa-1"]["saves_per_1k_cuped_minus_pinrec"]) < by["aa-1"]["mde_saves_per_1k"]
    constant = arm_rows(log, pre.assign(save=0, impressions=1), ["pinrec"], 50)[0]
    assert constant["saves_per_1k_cuped"] == pytest.approx(constant["saves_per_1k"])


def test_the_closed_loop_benchmark_reports_the_relations_of_the_arms_it_compared():
    from benchmarks.closed_loop import arm_rows as benchmark_rows
    from benchmarks.closed_loop import target_relations

    log, pre = _experiment()
    pre_events = pd.DataFrame(  # contract rows of the warm-up: impressions, then the engagements
        {
            "user_id": np.r_[np.repeat(pre.index, pre["impressions"]), np.repeat(pre.index, pre["save"])],
            "outcome": ["impression"] * int(pre["impressions"].sum()) + ["save"] * int(pre["save"].sum()),
        }
    )
    rows = benchmark_rows(log, pre_events, ["pinrec", "aa-1", "aa-2"], 50)
    assert rows == benchmark_rows(log, pre_events, ["pinrec", "aa-1", "aa-2"], 50)
    by = {r["name"]: r for r in rows}
    assert by["aa-1"]["mde_saves_per_1k"] > 0 and by["pinrec"]["ci95_saves_per_1k_cuped"] > 0
    relations, targets = target_relations(by)
    assert set(relations) == {
        "aa_difference_saves",
        "aa_relative_difference_saves",
        "aa_relative_difference_clicks",
        "pinrec_cuped_ci95_over_saves",
    }  # no sasrec, oracle or save-weight arms in this run: none of their relations
    assert targets == {
        "aa_relative_difference_saves": 0.05,
        "aa_relative_difference_clicks": 0.05,
        "pinrec_cuped_ci95_over_saves": 0.06,
    }
    assert relations["aa_relative_difference_saves"] > 0.2  # aa-2 saves 50% more here
