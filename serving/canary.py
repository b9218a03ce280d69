"""Canary evaluation: a published version against the champion on a day neither trained on.

For every user with an engagement on the evaluation day, the version retrieves k candidates from
the user's sequence as of the start of that day (point in time: Feast features at day start),
through the same code serving runs (`LoadedVersion.retrieve`: queries per (outcome, offset),
ANN search, merge by outcome weights). Metrics:

- ``recall@k/<outcome>``: unordered recall of the user's items engaged with that outcome on the
  day (training.metrics.unordered_recall_at_k), and ``recall@k`` over all engaged items;
- ``distinct_per_list`` and ``coverage`` (diversity);
- ``latency_p50_ms`` / ``latency_p99_ms`` of retrieval per user.

Engaged outcomes are the vocabulary's (``engaged``; default the built-in data's), measured per
outcome for ``outcomes`` (default click and save). ``evaluate_popularity`` scores the popularity
baseline on the same users, day and protocol: the k items most engaged with in a training window,
the user's seen items left out as serving leaves them out.

`gate` turns two metric sets into a verdict: the candidate passes when no guarded metric is worse
than the champion's by more than the tolerance, and every absolute floor is met.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from events.contract import ENGAGED_OUTCOMES
from serving.encoder import UserSequence
from serving.retriever import LoadedVersion
from training import metrics

WARMUP_USERS = 5


def _futures(day_events: pd.DataFrame, engaged_outcomes: Sequence[str], outcomes: Sequence[str]
             ) -> tuple[list[int], list[set], dict[str, list[set]]]:
    """(users with an engagement on the day, each one's engaged items, per outcome)."""
    engaged = day_events[day_events["outcome"].isin(list(engaged_outcomes))]
    users = sorted(set(engaged["user_id"].tolist()))
    by_user = {u: g for u, g in engaged.groupby("user_id")}
    future = [set(by_user[u]["item_id"].tolist()) for u in users]
    future_by_outcome = {o: [set(by_user[u].loc[by_user[u]["outcome"] == o, "item_id"].tolist()) for u in users]
                         for o in outcomes}
    return users, future, future_by_outcome


def _recall_figures(retrieved: list[list[int]], future: list[set], future_by_outcome: dict[str, list[set]],
                    k: int, n_items: int) -> dict[str, float]:
    users = len(retrieved)
    out = {
        f"recall@{k}": metrics.unordered_recall_at_k(retrieved, future, k) if users else float("nan"),
        "distinct_per_list": metrics.distinct_items_per_list(retrieved) if users else 0.0,
        "coverage": metrics.catalogue_coverage(retrieved, n_items) if users else 0.0,
    }
    for o, r in metrics.recall_by_outcome(retrieved, future_by_outcome, k).items():
        out[f"recall@{k}/{o}"] = r
    return out


def evaluate_version(version: LoadedVersion, sequences: Mapping[int, UserSequence], day_events: pd.DataFrame,
                     *, k: int = 100, outcome_weights: Mapping[str, float] | None = None,
                     outcomes: Sequence[str] = ("click", "save"),
                     engaged: Sequence[str] = tuple(sorted(ENGAGED_OUTCOMES))) -> dict[str, float]:
    """Metrics of `version` on `day_events` (contract rows of the evaluation day, one surface)."""
    users, future, future_by_outcome = _futures(day_events, engaged, outcomes)
    retrieved, latencies = [], []
    for user in users[:WARMUP_USERS]:  # first calls pay one-off costs (allocations, kernel setup)
        version.retrieve(sequences.get(user, UserSequence.empty()), k, outcome_weights)
    for user in users:
        seq = sequences.get(user, UserSequence.empty())
        result = version.retrieve(seq, k, outcome_weights)
        latencies.append(sum(result.timings_ms.values()))
        retrieved.append([c.item for c in result.candidates])
    figures = _recall_figures(retrieved, future, future_by_outcome, k, len(version.item_ids))
    out = {
        f"recall@{k}": figures.pop(f"recall@{k}"),
        "distinct_per_list": figures.pop("distinct_per_list"),
        "coverage": figures.pop("coverage"),
        "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else 0.0,
        "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies else 0.0,
        "users": float(len(users)),
    }
    out.update(figures)
    return out


def evaluate_popularity(train_events: pd.DataFrame, sequences: Mapping[int, UserSequence], day_events: pd.DataFrame,
                        *, k: int = 100, outcomes: Sequence[str] = ("click", "save"),
                        engaged: Sequence[str] = tuple(sorted(ENGAGED_OUTCOMES))) -> dict[str, float]:
    """The popularity baseline on the same users, day and metrics as `evaluate_version`: every
    user gets the k items engaged with most often in `train_events` (ties: the smaller item id)
    that are not in the user's sequence (as serving drops seen items)."""
    users, future, future_by_outcome = _futures(day_events, engaged, outcomes)
    counts = train_events.loc[train_events["outcome"].isin(list(engaged)), "item_id"].value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    popular = [int(item) for item, _ in ranked]
    retrieved = []
    for user in users:
        seen = set(sequences.get(user, UserSequence.empty()).item_ids.tolist())
        top = []
        for item in popular:
            if item not in seen:
                top.append(item)
                if len(top) == k:
                    break
        retrieved.append(top)
    return {**_recall_figures(retrieved, future, future_by_outcome, k, max(len(popular), 1)),
            "users": float(len(users))}


@dataclass(frozen=True)
class GatePolicy:
    """Guarded metrics may fall at most `tolerance` (relative) below the champion's; floors are
    absolute minimums every candidate must clear, champion or not."""

    guarded: tuple[str, ...] = ("recall@100", "recall@100/click", "recall@100/save")
    tolerance: float = 0.05
    floors: Mapping[str, float] = field(default_factory=lambda: {"recall@100": 0.02})
    # Latency is measured in the batch job, on a machine doing other work: the gate compares it
    # with the champion's, measured in the same run, and keeps only a generous absolute cap.
    max_latency_ratio: float = 1.5
    max_latency_p99_ms: float = 2000.0


@dataclass(frozen=True)
class GateRule:
    """One rule of the gate: `value` must be >= `threshold` (margin = value - threshold >= 0).
    Rules on "lower is better" figures (latency) are stated on their negation or headroom so
    that a positive margin always means room to spare."""

    rule: str
    metric: str
    candidate: float
    champion: float | None
    threshold: float
    margin: float
    passed: bool
    reason: str


def _rule(rule: str, metric: str, value: float, threshold: float, champion: float | None, reason: str) -> GateRule:
    margin = value - threshold
    passed = bool(np.isfinite(value) and margin >= 0)
    return GateRule(rule, metric, float(value), None if champion is None else float(champion), float(threshold),
                    float(margin) if np.isfinite(margin) else float("-inf"), passed, "" if passed else reason)


def gate_rules(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
               policy: GatePolicy = GatePolicy(), *, candidate_data_through: date | None = None,
               champion_data_through: date | None = None) -> list[GateRule]:
    """Every rule the gate applies, with the candidate's value, the champion's, the threshold and
    the margin to it. Data freshness: a candidate trained on data older than the champion's
    newest training day never replaces it (a backfill of an old day must not undo a newer model)."""
    rules = []
    for name, floor in policy.floors.items():
        value = candidate.get(name, float("nan"))
        rules.append(_rule("floor", name, value, floor, (champion or {}).get(name),
                           f"{name} = {value:.4f} is below the floor {floor:.4f}"))
    p99 = candidate.get("latency_p99_ms", 0.0)
    rules.append(_rule("latency cap", "latency_p99_ms", -p99, -policy.max_latency_p99_ms,
                       None if not champion else -champion.get("latency_p99_ms", 0.0),
                       f"latency_p99_ms = {p99:.1f} above {policy.max_latency_p99_ms:.0f}"))
    if champion and champion.get("latency_p50_ms"):
        ratio = candidate.get("latency_p50_ms", 0.0) / champion["latency_p50_ms"]
        rules.append(_rule("latency vs champion", "latency_p50_ms ratio", -ratio, -policy.max_latency_ratio, -1.0,
                           f"latency_p50_ms is {ratio:.2f}x the champion's (limit {policy.max_latency_ratio:.2f}x)"))
    if champion:
        for name in policy.guarded:
            cand, champ = candidate.get(name), champion.get(name)
            if cand is None or champ is None or np.isnan(champ):
                continue
            rules.append(_rule("not worse than champion", name, cand, champ * (1 - policy.tolerance), champ,
                               f"{name} = {cand:.4f} is worse than the champion's {champ:.4f} "
                               f"by more than {policy.tolerance:.0%}"))
    if candidate_data_through is not None and champion_data_through is not None:
        days = (candidate_data_through - champion_data_through).days
        rules.append(GateRule(
            "data not older than champion's", "data_through (days vs champion)", float(days), 0.0, 0.0, float(days),
            days >= 0, "" if days >= 0 else
            f"stale: the candidate trained on data through {candidate_data_through}, the champion through "
            f"{champion_data_through}; an older model never replaces a newer one"))
    return rules


def gate(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
         policy: GatePolicy = GatePolicy(), **data_through: date | None) -> tuple[bool, list[str]]:
    """(passed, reasons): reasons name every rule the candidate broke (empty when it passed)."""
    reasons = [r.reason for r in gate_rules(candidate, champion, policy, **data_through) if not r.passed]
    return not reasons, reasons
