"""The promotion rules, offline and online, as library code: each rule a `GateRule` with the
candidate's figure, the champion's, the threshold, the margin to it and whether the figure is
better higher or lower, rendered one way (`GateRule.rendered`) for both gates.

Offline (`gate_rules`, on the canary evaluation's figures, serving.evaluation.canary):
- against every baseline (the popularity policy, and the random policy where the log lets it be
  measured): a first candidate must beat each on the yardstick (`GatePolicy.yardstick`; it is not
  bootstrapped as champion otherwise); a candidate for a surface with a champion must not be
  below one by more than `baseline_z` standard errors of the difference on
  `GatePolicy.baseline_yardstick` (the position-corrected replay where the evaluation records
  it). On one day of a few hundred users no offline figure tells a model from the baselines (docs/yardstick.md): in the
  closed loop of 2026-12-05 every homefeed candidate of days 4-9 replayed below popularity, while
  the pinrec arm served 9.3 saves and 18.7 clicks per 1,000 against popularity's 6.2 and 9.1. So
  the offline gate refuses a successor only on evidence, and the online trial against the
  champion (serving.evaluation.online_gate) decides;
- absolute floors; a latency cap on p99 and a ratio cap on p50 against the champion;
- not worse than the champion on the guarded figures (relative tolerance) and on the ranking
  figures (absolute tolerance, or `ranking_z` standard errors of the difference when larger);
- staleness: never replace a champion trained on newer data (the registry's rule,
  `serving.registry.store.stale_reason`, which `Registry.promote` enforces).

Online: `serving.evaluation.online_gate` (a sequential non-inferiority test on the canary's
trial), its rules rendered the same way.

A `Verdict` is what a gate decided: passed or not, and why, in the words the day's line prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from serving.registry.manifest import stale_reason

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class GatePolicy:
    """Guarded metrics may fall at most `tolerance` (relative) below the champion's; floors are
    absolute minimums every candidate must clear, champion or not; the candidate must beat
    every baseline measured (`baselines`) on `yardstick`, champion or not."""

    guarded: tuple[str, ...] = ("recall@100", "recall@100/click", "recall@100/save")
    tolerance: float = 0.05
    # ... or `z` standard errors of the difference over the day's users, when that is larger
    z: float = 1.96
    # ranking (slates of a day with impressions): may fall at most `ranking_tolerance` (absolute:
    # an AUC's scale starts at 0.5) below the champion's, or `ranking_z` standard errors of the
    # difference when that is larger (a day's slate means are noisy: with a few hundred slates
    # their standard errors are several times 0.01, and a fixed tolerance fails most candidates
    # on noise alone)
    ranking_guarded: tuple[str, ...] = ("slate_auc/click", "slate_auc/save", "slate_ndcg@10")
    ranking_tolerance: float = 0.01
    ranking_z: float = 1.96
    floors: Mapping[str, float] = field(default_factory=lambda: {"recall@100": 0.02})
    # Latency is measured in the batch job, on a machine doing other work: the gate compares it
    # with the champion's, measured in the same run, and keeps only a generous absolute cap.
    max_latency_ratio: float = 1.5
    max_latency_p99_ms: float = 2000.0
    # the offline figure a candidate must beat the baselines on (serving.evaluation.canary names
    # it: the yardstick when the evaluation computes one, else recall@100)
    yardstick: str = "recall@100"
    beat_baselines: bool = True
    # a successor (the surface has a champion) against the baselines: the figure ("" = `yardstick`;
    # used where candidate and baseline both carry it) and how many standard errors of the
    # difference it may fall below a baseline (0: it must beat each, as a first candidate must)
    baseline_yardstick: str = ""
    baseline_z: float = 1.96


@dataclass(frozen=True)
class GateRule:
    """One rule of a gate: with `better` "higher", `candidate` must be >= `threshold`; with
    "lower" (latency, a ratio), <= it. `margin` is the room to spare either way (positive: the
    rule holds), `bound` names the threshold ("floor", "cap", "champion - 5%", "popularity")."""

    rule: str
    metric: str
    candidate: float
    champion: float | None
    threshold: float
    margin: float
    passed: bool
    reason: str
    better: str = HIGHER
    bound: str = ""
    unit: str = ""

    def rendered(self) -> str:
        """The rule as it is read, e.g. `latency p99 244 ms <= cap 2000 ms, margin 1756 ms`."""
        label = self.metric.removesuffix("_ms").replace("_", " ") if self.unit == " ms" else self.metric
        ok, broken = ("<=", ">") if self.better == LOWER else (">=", "<")
        sign = ok if self.passed else broken
        room = "margin" if self.passed else ("over by" if self.better == LOWER else "short by")
        bound = f"{self.bound} " if self.bound else ""
        return (
            f"{label} {_figure(self.candidate, self.unit)} {sign} {bound}{_figure(self.threshold, self.unit)}, "
            f"{room} {_figure(abs(self.margin), self.unit)}"
        )


def _figure(value: float, unit: str) -> str:
    if not np.isfinite(value):
        return str(value)
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.0f}{unit}" if unit else f"{value:.4f}"


def rule(
    name: str,
    metric: str,
    value: float,
    threshold: float,
    champion: float | None,
    reason: str,
    *,
    better: str = HIGHER,
    bound: str = "",
    unit: str = "",
    strict: bool = False,
) -> GateRule:
    """A rule on `value` against `threshold`; `strict`: equality does not pass (to beat)."""
    margin = (threshold - value) if better == LOWER else (value - threshold)
    passed = bool(np.isfinite(value) and (margin > 0 if strict else margin >= 0))
    return GateRule(
        name,
        metric,
        float(value),
        None if champion is None else float(champion),
        float(threshold),
        float(margin) if np.isfinite(margin) else float("-inf"),
        passed,
        "" if passed else reason,
        better,
        bound,
        unit,
    )


def staleness_rule(candidate_through: date | None, champion_through: date | None) -> GateRule | None:
    """Data freshness as a gate rule (None when either side has no training days): the days the
    candidate's newest training day is after the champion's must be >= 0."""
    if candidate_through is None or champion_through is None:
        return None
    days = (candidate_through - champion_through).days
    stale = stale_reason("candidate", candidate_through.isoformat(), "champion", champion_through.isoformat())
    return GateRule(
        "data not older than champion's",
        "data_through (days vs champion)",
        float(days),
        0.0,
        0.0,
        float(days),
        stale is None,
        stale or "",
        HIGHER,
        "champion",
        " days",
    )


# baselines the canary reports but the gate does not ask the candidate to beat: buy again
# (serving.evaluation.buy_again; a vocabulary with repeats) is a figure to read beside popularity
REPORTED_ONLY = frozenset({"buy_again"})


def baseline_rules(
    candidate: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    policy: GatePolicy,
    *,
    has_champion: bool = False,
) -> list[GateRule]:
    """The candidate against each baseline measured (popularity; random where the log has an
    exploration share). A first candidate must beat each on the yardstick; with a champion, on
    `policy.baseline_yardstick` where both carry it (else the yardstick), it may fall
    `policy.baseline_z` standard errors of the difference below (`<figure>_se`, independent). A
    baseline without the figure is not measurable, and one of `REPORTED_ONLY` (buy again) is
    reported beside the others, not gated."""
    if not policy.beat_baselines:
        return []
    rules = []
    for baseline, figures in baselines.items():
        if baseline in REPORTED_ONLY:
            continue
        name = (policy.baseline_yardstick or policy.yardstick) if has_champion else policy.yardstick
        if name not in figures or name not in candidate:
            name = policy.yardstick
        value, theirs = candidate.get(name, float("nan")), figures.get(name)
        if theirs is None or not np.isfinite(theirs):
            continue
        allowed, noise_words = (0.0, "")
        if has_champion and policy.baseline_z > 0:
            allowed, noise_words = _allowance(name, 0.0, policy.baseline_z, candidate, figures)
        if not np.isfinite(value):
            reason = (
                f"{name} is not measurable for the candidate on the day (for the yardstick: no "
                f"logged impression of the day is in its lists) and does not beat the {baseline} "
                f"policy's {theirs:.4f}"
            )
        elif allowed > 0:
            reason = (
                f"{name} = {value:.4f} does not beat the {baseline} policy's {theirs:.4f} and is below it by more "
                f"than {noise_words}"
            )
        else:
            reason = f"{name} = {value:.4f} does not beat the {baseline} policy's {theirs:.4f}"
        rules.append(
            rule(
                f"beats {baseline}" if allowed == 0 else f"not worse than {baseline}",
                f"{name} vs {baseline}",
                value,
                theirs - allowed,
                None,
                reason,
                bound=baseline if allowed == 0 else f"{baseline} - {allowed:.4f}",
                strict=allowed == 0,
            )
        )
    return rules


def gate_rules(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    policy: GatePolicy = GatePolicy(),
    *,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    candidate_data_through: date | None = None,
    champion_data_through: date | None = None,
) -> list[GateRule]:
    """Every rule the offline gate applies, with the candidate's value, the champion's, the
    threshold and the margin to it (see the module docstring)."""
    rules = baseline_rules(candidate, baselines or {}, policy, has_champion=bool(champion))
    for name, floor in policy.floors.items():
        value = candidate.get(name, float("nan"))
        rules.append(
            rule(
                "floor",
                name,
                value,
                floor,
                (champion or {}).get(name),
                f"{name} = {value:.4f} is below the floor {floor:.4f}",
                bound="floor",
            )
        )
    p99 = candidate.get("latency_p99_ms", 0.0)
    rules.append(
        rule(
            "latency cap",
            "latency_p99_ms",
            p99,
            policy.max_latency_p99_ms,
            None if not champion else champion.get("latency_p99_ms", 0.0),
            f"latency_p99_ms = {p99:.1f} above {policy.max_latency_p99_ms:.0f}",
            better=LOWER,
            bound="cap",
            unit=" ms",
        )
    )
    if champion and champion.get("latency_p50_ms"):
        ratio = candidate.get("latency_p50_ms", 0.0) / champion["latency_p50_ms"]
        rules.append(
            rule(
                "latency vs champion",
                "latency_p50_ms ratio",
                ratio,
                policy.max_latency_ratio,
                1.0,
                f"latency_p50_ms is {ratio:.2f}x the champion's (limit {policy.max_latency_ratio:.2f}x)",
                better=LOWER,
                bound="cap",
                unit="x",
            )
        )
    if champion:
        rules += _champion_rules(candidate, champion, policy)
    stale = staleness_rule(candidate_data_through, champion_data_through)
    return rules + ([stale] if stale else [])


def _allowance(
    name: str, fixed: float, z: float, candidate: Mapping[str, float], champion: Mapping[str, float]
) -> tuple[float, str]:
    """How far `name` may fall below the champion's: `fixed`, or `z` standard errors of the
    difference of the two figures (their `<name>_se`, taken as independent) when that is larger,
    so a day's sampling noise alone does not refuse a candidate. (allowance, its wording)"""
    se_cand, se_champ = candidate.get(f"{name}_se"), champion.get(f"{name}_se")
    if se_cand is not None and se_champ is not None and np.isfinite(se_cand) and np.isfinite(se_champ):
        noise = z * float(np.hypot(se_cand, se_champ))
        if noise > fixed:
            return noise, f"{noise:.3f} ({z:g} standard errors of the difference)"
    return fixed, ""


def _champion_rules(
    candidate: Mapping[str, float], champion: Mapping[str, float], policy: GatePolicy
) -> list[GateRule]:
    rules = []
    for kind, names in (("not worse than champion", policy.guarded), ("ranking", policy.ranking_guarded)):
        for name in names:
            cand, champ = candidate.get(name), champion.get(name)
            if cand is None or champ is None or np.isnan(champ):
                continue
            if kind == "ranking":
                kind_name, z = "ranking not worse than champion", policy.ranking_z
                fixed, fixed_words = policy.ranking_tolerance, f"{policy.ranking_tolerance:.3f}"
            else:
                kind_name, z = kind, policy.z
                fixed, fixed_words = champ * policy.tolerance, f"{policy.tolerance:.0%}"
            allowed, noise_words = _allowance(name, fixed, z, candidate, champion)
            rules.append(
                rule(
                    kind_name,
                    name,
                    cand,
                    champ - allowed,
                    champ,
                    f"{name} = {cand:.4f} is worse than the champion's {champ:.4f} by more than "
                    f"{noise_words or fixed_words}",
                    bound=f"champion - {allowed:.4f}",
                )
            )
    return rules


def gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    policy: GatePolicy = GatePolicy(),
    **context,
) -> tuple[bool, list[str]]:
    """(passed, reasons): reasons name every rule the candidate broke (empty when it passed)."""
    reasons = [r.reason for r in gate_rules(candidate, champion, policy, **context) if not r.passed]
    return not reasons, reasons


@dataclass(frozen=True)
class Verdict:
    """What a gate decided: `passed`, and `reasons` (every broken rule, the first the main one)."""

    passed: bool
    reasons: tuple[str, ...] = ()

    @classmethod
    def of(cls, rules: Sequence[GateRule], *more_reasons: str) -> Verdict:
        reasons = (*more_reasons, *(r.reason for r in rules if not r.passed))
        return cls(not reasons, reasons)

    @property
    def line(self) -> str:
        """`passed` or `not promoted: <first reason>` (the day's line and the run's tag)."""
        return "passed" if self.passed else f"not promoted: {self.reasons[0]}"
