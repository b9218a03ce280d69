"""The online canary's decision: a sequential non-inferiority test, checked once a day.

A canary serves a share of users for as many days as its decision needs. Each day the trial's
days so far are compared, canary users against champion users, on engagements (clicks + saves)
per 1,000 served impressions: ``ell = ln(canary rate / champion rate)`` with its standard error
over users (`monitoring.online.compare_groups`). With margin ``m`` (`OnlinePolicy`):

1. **Clear loser, any day**: the canary is rolled back at once when it is significantly worse
   than the champion, ``ell + z_loser * se < 0``, where ``z_loser`` splits ``loser_alpha`` over the
   trial's possible daily looks (Bonferroni: ``z_loser = z(1 - loser_alpha / max_days)``), so an
   equal canary is stopped early with probability at most ``loser_alpha`` however often it is
   checked.
2. **Enough information**: the trial decides once ``se <= |ln(1 - m)| / (z(1 - alpha) + z(power))``
   (the standard error at which a canary as good as the champion is shown non-inferior with
   probability ``power``) and both sides have ``min_users``; until then it goes on (a day with too
   few users is not a verdict).
3. **Non-inferiority, once**: it promotes when ``ell - z(1 - alpha) * se > ln(1 - m)`` (the
   canary's one-sided lower bound above ``(1 - m)`` x the champion's rate), else rolls back. A
   trial that reaches ``max_days`` without enough information decides on what it has.

The test of step 3 runs once per trial, so a canary worse than the margin is promoted with
probability at most ``alpha``; an equal canary is rolled back with probability about
``(1 - power) + loser_alpha`` when its trial reaches the information before ``max_days``. A
trial that runs out of days decides on less and rolls an equal canary back more often: the
margin a surface's traffic can vouch for in ``max_days`` is the real limit (measured in the
closed-loop world: `benchmarks/canary_calibration.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from statistics import NormalDist

from serving.evaluation.gate import GateRule, Verdict, rule

PROMOTE, ROLL_BACK, CONTINUE = "promote", "roll back", "continue"


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class OnlinePolicy:
    """The online trial's design (module docstring). With the defaults an equal canary is rolled
    back with probability about 0.035 ((1 - power) + loser_alpha); a canary with a quarter of a
    surface's traffic in the default world gathers the information for a 20% margin in 3 to 12
    days (benchmarks/canary_calibration.py: with at most 10 days the quietest surface, related,
    rolled back 15% of equal canaries, deciding on less)."""

    margin: float = 0.20  # promote when the canary is shown to keep >= (1 - margin) x the champion's rate
    alpha: float = 0.05  # P(promote | canary worse than the margin), one-sided
    power: float = 0.97  # P(promote | canary as good as the champion), once the trial has its information
    loser_alpha: float = 0.005  # P(an equal canary is stopped early as a clear loser), over all daily looks
    max_days: int = 14
    min_users: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.margin < 1:
            raise ValueError(f"OnlinePolicy: margin must be in (0, 1), got {self.margin}")
        for name in ("alpha", "power", "loser_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"OnlinePolicy: {name} must be in (0, 1), got {getattr(self, name)}")
        if self.max_days < 1 or self.min_users < 1:
            raise ValueError("OnlinePolicy: max_days and min_users must be >= 1")

    @property
    def bound(self) -> float:
        """ln(1 - margin): the non-inferiority bound on ln(canary / champion)."""
        return math.log1p(-self.margin)

    @property
    def target_se(self) -> float:
        """The standard error at which the trial has the information for its decision."""
        return -self.bound / (_z(1 - self.alpha) + _z(self.power))

    @property
    def loser_z(self) -> float:
        return _z(1 - self.loser_alpha / self.max_days)


@dataclass(frozen=True)
class OnlineDecision:
    """What the trial's day decided: `action` promote / roll back / continue, the rules it read,
    and the verdict (passed only for promote)."""

    action: str
    rules: tuple[GateRule, ...]
    reasons: tuple[str, ...]
    trial_day: int

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.action == PROMOTE, self.reasons)

    def rolled_back(self, reason: str) -> OnlineDecision:
        """This decision overruled: rolled back for `reason` (first), whatever the figures said."""
        return replace(self, action=ROLL_BACK, reasons=(reason, *(self.reasons if self.action == ROLL_BACK else ())))

    @property
    def line(self) -> str:
        """The day's line: `passed`, `not promoted: <reason>`, or `trial continues: <why>`."""
        if self.action == CONTINUE:
            return f"trial continues: {self.reasons[0]}"
        return self.verdict.line


def online_decision(
    comparison: Mapping[str, float], trial_day: int, policy: OnlinePolicy = OnlinePolicy()
) -> OnlineDecision:
    """The decision on day `trial_day` (1 = the canary's first day serving) of a trial whose days
    so far gave `comparison` (a `monitoring.online.Comparison` as a dict; A the champion's users,
    B the canary's). See the module docstring for the rules."""
    c = comparison
    ell, se = float(c.get("log_ratio", float("nan"))), float(c.get("log_ratio_se", float("inf")))
    measurable = math.isfinite(ell) and math.isfinite(se)
    last_day = trial_day >= policy.max_days
    fewest = min(c["users_a"], c["users_b"])
    users = rule(
        "enough users",
        "users (fewer of canary, champion)",
        fewest,
        policy.min_users,
        c["users_a"],
        f"too few users to judge ({c['users_b']} canary, {c['users_a']} champion; at least {policy.min_users} each)",
        bound="minimum",
        unit=" users",
    )
    upper = ell + policy.loser_z * se if measurable else float("inf")
    loser = rule(
        "not a clear loser",
        "upper bound of ln(canary / champion)",
        upper,
        0.0,
        None,
        f"the canary is significantly worse than the champion: {c['metric']} {c['b']:.2f} against "
        f"{c['a']:.2f} (ln ratio {ell:+.3f}, upper bound {upper:+.3f} < 0 at {policy.loser_z:.2f} standard "
        f"errors, for daily looks over at most {policy.max_days} days)",
        bound="zero",
    )
    information = rule(
        "enough information",
        "standard error of ln(canary / champion)",
        se,
        policy.target_se,
        None,
        f"its standard error {se:.3f} is above the {policy.target_se:.3f} its decision needs "
        f"(day {trial_day} of at most {policy.max_days})",
        better="lower",
        bound="target",
    )
    lower = ell - _z(1 - policy.alpha) * se if measurable else float("-inf")
    non_inferior = rule(
        "non-inferior",
        "lower bound of ln(canary / champion)",
        lower,
        policy.bound,
        None,
        f"the canary is not shown within {policy.margin:.0%} of the champion: {c['metric']} {c['b']:.2f} "
        f"against {c['a']:.2f}, lower bound {math.exp(lower) if math.isfinite(lower) else 0.0:.2f}x the "
        f"champion's < {1 - policy.margin:.2f}x after {trial_day} day(s)",
        bound=f"ln(1 - {policy.margin:g})",
    )
    if users.passed and measurable and not loser.passed:
        return OnlineDecision(ROLL_BACK, (users, loser), (loser.reason,), trial_day)
    if not users.passed or not information.passed:
        waiting = users if not users.passed else information
        if not last_day:
            return OnlineDecision(CONTINUE, (users, loser, information), (waiting.reason,), trial_day)
        if not users.passed:
            return OnlineDecision(
                ROLL_BACK, (users,), (f"{users.reason} after {trial_day} day(s), the trial's maximum",), trial_day
            )
    rules = (users, loser, information, non_inferior)
    if non_inferior.passed:
        return OnlineDecision(PROMOTE, rules, (), trial_day)
    return OnlineDecision(ROLL_BACK, rules, (non_inferior.reason,), trial_day)
