"""Online canary trials in the closed-loop world, decided by the lifecycle's own rule.

A trial splits the users of a surface: a share of them (hashed as the service hashes them,
`serving.service.versions.canary_fraction`, with the trial's salt so trials differ) is served by
the canary, the others by the champion, in one world and one shared log (the real experiment's
design). After each served day, every surface still on trial is judged on its days so far by
`serving.evaluation.online_gate.online_decision` on `monitoring.online.compare_groups` (what the
`online_canary_gate` check runs), and stops at its decision: promote, roll back, or on to the next
day.

When the canary is the champion itself (an A/A trial: the champion's weights published again),
the served lists do not depend on the split, so one run of the champion serves every A/A trial:
`aa_trials` splits its log after the fact (the same log a split run would write).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from events.contract import SURFACES
from monitoring.online import compare_groups
from serving.evaluation.online_gate import CONTINUE, OnlinePolicy, online_decision
from serving.service.versions import canary_fraction
from world.closed_loop import Served, SessionRequest
from world.policy_loop.harness import LogRun, play_days, start_view
from world.policy_loop.policies import LoopView, Policy


def in_canary(surface: str, user_id: int, salt: int, traffic: float) -> bool:
    """Whether the trial with `salt` serves `user_id` the canary on `surface`."""
    return canary_fraction(f"{surface}/trial-{salt}", user_id) < traffic


@dataclass(frozen=True)
class TrialResult:
    surface: str
    salt: int
    action: str  # promote / roll back (continue only when the days ran out before max_days)
    days: int
    log_ratio: float
    reason: str


class SplitPolicy(Policy):
    """Serves each request with the canary or the champion, by the trial's hashed user share."""

    def __init__(self, champion: Policy, canary: Policy, salt: int, traffic: float) -> None:
        self.champion, self.canary, self.salt, self.traffic = champion, canary, salt, traffic
        self.name = f"{champion.name}|{canary.name}"

    def start_day(self, view: LoopView) -> None:
        self.champion.start_day(view)
        self.canary.start_day(view)

    def recommend(self, requests: list[SessionRequest], view: LoopView) -> list[Served]:
        to_canary = [in_canary(r.surface, r.user_id, self.salt, self.traffic) for r in requests]
        out: list[Served | None] = [None] * len(requests)
        for role, policy, wanted in (("canary", self.canary, True), ("champion", self.champion, False)):
            idx = [i for i, c in enumerate(to_canary) if c == wanted]
            if not idx:
                continue
            for i, s in zip(idx, policy.recommend([requests[i] for i in idx], view)):
                out[i] = Served(s.items, policy.name, s.arm, role, s.propensities)
        return out  # type: ignore[return-value]


def _decide(days: list[pd.DataFrame], surface: str, canary: str, policy: OnlinePolicy):
    log = pd.concat(days, ignore_index=True)
    log = log[log["surface"] == surface]
    comparison = compare_groups(
        log[log["served_by"] == "champion"], log[(log["served_by"] == "canary") & (log["version"] == canary)]
    )
    return comparison, online_decision(comparison.to_dict(), len(days), policy)


def _result(surface: str, salt: int, days: int, comparison, decision) -> TrialResult:
    return TrialResult(surface, salt, decision.action, days, comparison.log_ratio, (decision.reasons or ("",))[0])


def aa_trials(daily_logs: list[pd.DataFrame], salts: range, traffic: float, policy: OnlinePolicy) -> list[TrialResult]:
    """A/A trials on the days of one champion run (`daily_logs`, its serving log per day): each
    salt splits its users into canary and champion (module docstring), on every surface."""
    out = []
    for salt in salts:
        days = []
        for log in daily_logs[: policy.max_days]:
            role = [
                "canary" if in_canary(s, u, salt, traffic) else "champion"
                for s, u in zip(log["surface"], log["user_id"])
            ]
            days.append(log.assign(served_by=role, version="champion"))
        out.extend(_judge_days(days, salt, "champion", policy))
    return out


def _judge_days(days: list[pd.DataFrame], salt: int, canary: str, policy: OnlinePolicy) -> list[TrialResult]:
    out = []
    for surface in SURFACES:
        for k in range(1, len(days) + 1):
            comparison, decision = _decide(days[:k], surface, canary, policy)
            if decision.action != CONTINUE or k == len(days):
                out.append(_result(surface, salt, k, comparison, decision))
                break
    return out


def split_trials(
    run: LogRun, champion: Policy, canary: Policy, salts: range, traffic: float, policy: OnlinePolicy
) -> list[TrialResult]:
    """Trials of `canary` against `champion`, each salt a split run of the world from the end of
    the training days; a run stops once every surface has decided (or at `max_days`)."""
    out = []
    days_available: list[dt.date] = run.serve_days[: policy.max_days]
    for salt in salts:
        split = SplitPolicy(champion, canary, salt, traffic)
        view = start_view(run)
        logs: list[pd.DataFrame] = []
        open_surfaces = set(SURFACES)
        for day in days_available:
            [result] = play_days(split, view, [day])
            logs.append(result.serving_log)
            for surface in sorted(open_surfaces):
                comparison, decision = _decide(logs, surface, canary.name, policy)
                if decision.action != CONTINUE or len(logs) == len(days_available):
                    out.append(_result(surface, salt, len(logs), comparison, decision))
                    open_surfaces.discard(surface)
            if not open_surfaces:
                break
    return out
