"""The online canary's sequential non-inferiority test (serving.evaluation.online_gate), on
simulated trials: users with their own engagement rates, a canary share of them, checked daily."""

import math

import numpy as np
import pytest

from monitoring.online import log_rate_se
from serving.evaluation.online_gate import CONTINUE, PROMOTE, ROLL_BACK, OnlinePolicy, online_decision


def _comparison(champion: tuple[np.ndarray, np.ndarray], canary: tuple[np.ndarray, np.ndarray]) -> dict:
    """What monitoring.online.compare_groups reports, from per-user (engaged, impressions)."""
    (ya, na), (yb, nb) = champion, canary
    ra, rb = 1000 * ya.sum() / na.sum(), 1000 * yb.sum() / nb.sum()
    return {
        "metric": "click+save_per_1k",
        "a": ra,
        "b": rb,
        "difference": rb - ra,
        "ci95_low": float("nan"),
        "ci95_high": float("nan"),
        "users_a": int((na > 0).sum()),
        "users_b": int((nb > 0).sum()),
        "log_ratio": math.log(rb / ra) if ra > 0 and rb > 0 else float("nan"),
        "log_ratio_se": float(np.hypot(log_rate_se(ya[na > 0], na[na > 0]), log_rate_se(yb[nb > 0], nb[nb > 0]))),
    }


def _trial(rng, policy: OnlinePolicy, lift: float, users: int = 1500, share: float = 0.25, rate: float = 0.03):
    """One trial: every day each user shows up with probability 0.5 and sees ~20 impressions; a
    user's engagement rate is gamma-spread around `rate` (x `lift` for the canary's users). The
    decision and the day it came."""
    canary = rng.random(users) < share
    user_rate = rate * rng.gamma(4.0, 0.25, users) * np.where(canary, lift, 1.0)
    engaged, shown = np.zeros(users), np.zeros(users)
    for day in range(1, policy.max_days + 1):
        seen = (rng.random(users) < 0.5) * rng.poisson(20, users)
        engaged += rng.binomial(seen, np.minimum(user_rate, 1.0))
        shown += seen
        decision = online_decision(
            _comparison((engaged[~canary], shown[~canary]), (engaged[canary], shown[canary])), day, policy
        )
        if decision.action != CONTINUE:
            return decision.action, day
    raise AssertionError("the last day must decide")


def test_an_equal_canary_is_rolled_back_no_more_often_than_the_design_allows():
    """A/A, with traffic enough for a trial to reach its information before its last day: the
    false-rollback rate is within (1 - power) + loser_alpha, with three binomial standard errors
    of room for 400 simulated trials."""
    policy = OnlinePolicy()
    rng = np.random.default_rng(0)
    outcomes = [_trial(rng, policy, lift=1.0) for _ in range(400)]
    rollbacks = np.mean([action == ROLL_BACK for action, _ in outcomes])
    bound = (1 - policy.power) + policy.loser_alpha
    assert rollbacks <= bound + 3 * math.sqrt(bound * (1 - bound) / 400)
    assert np.mean([day for _, day in outcomes]) < policy.max_days  # it decides before the maximum


def test_a_canary_worse_than_the_margin_is_caught_and_a_clear_loser_early():
    policy = OnlinePolicy()
    rng = np.random.default_rng(1)
    worse = [_trial(rng, policy, lift=0.7) for _ in range(200)]
    assert np.mean([action == ROLL_BACK for action, _ in worse]) >= 0.95
    loser = [_trial(rng, policy, lift=0.4) for _ in range(50)]
    assert all(action == ROLL_BACK for action, _ in loser)
    assert np.mean([day for _, day in loser]) <= 2 and max(day for _, day in loser) <= 3  # of at most 14


def _given(b: float, se: float, users_b: int = 200, a: float = 30.0) -> dict:
    return {
        "metric": "click+save_per_1k",
        "a": a,
        "b": b,
        "difference": b - a,
        "ci95_low": -1.0,
        "ci95_high": 1.0,
        "users_a": 600,
        "users_b": users_b,
        "log_ratio": math.log(b / a),
        "log_ratio_se": se,
    }


def test_too_few_users_or_too_little_information_continues_the_trial_until_its_last_day():
    policy = OnlinePolicy(max_days=5)
    few = online_decision(_given(30.0, 0.05, users_b=12), 1, policy)
    assert few.action == CONTINUE and few.line.startswith("trial continues: too few users to judge (12 canary")
    noisy = online_decision(_given(30.0, 0.2), 2, policy)
    assert noisy.action == CONTINUE and "above the 0.063 its decision needs (day 2 of at most 5)" in noisy.line
    assert online_decision(_given(30.0, 0.2), 5, policy).action == ROLL_BACK  # the last day decides on what it has
    assert online_decision(_given(30.0, 0.05, users_b=12), 5, policy).action == ROLL_BACK


def test_non_inferiority_promotes_within_the_margin_and_says_why_it_does_not():
    policy = OnlinePolicy(margin=0.2)
    assert online_decision(_given(29.0, 0.05), 3, policy).action == PROMOTE  # 3% worse: within the margin
    refused = online_decision(_given(26.0, 0.06), 3, policy)
    assert refused.action == ROLL_BACK
    assert refused.verdict.line.startswith("not promoted: the canary is not shown within 20% of the champion")
    read = ["enough users", "not a clear loser", "enough information", "non-inferior"]
    assert [r.rule for r in refused.rules] == read


def test_the_loser_boundary_splits_its_error_over_the_daily_looks():
    assert OnlinePolicy(max_days=10, loser_alpha=0.01).loser_z == pytest.approx(3.09, abs=0.01)
    assert OnlinePolicy(margin=0.2, alpha=0.05, power=0.97).target_se == pytest.approx(0.0633, abs=1e-4)
    assert OnlinePolicy(max_days=1, loser_alpha=0.01).loser_z == pytest.approx(2.326, abs=0.01)
    with pytest.raises(ValueError, match="margin must be in"):
        OnlinePolicy(margin=1.5)
