"""Canary evaluation: a published version against the champion on a day neither trained on.

For every user with an engagement on the evaluation day, the version retrieves k candidates from
the user's sequence as of the start of that day (point in time: Feast features at day start),
through the same code serving runs (`LoadedVersion.retrieve`: queries per (outcome, offset),
ANN search, merge by outcome weights). Metrics:

- ``recall@k/<outcome>``: unordered recall of the user's items engaged with that outcome on the
  day (training.metrics.unordered_recall_at_k), and ``recall@k`` over all engaged items;
- ``distinct_per_list`` and ``coverage`` (diversity);
- ``latency_p50_ms`` / ``latency_p99_ms`` of retrieval per user.

`gate` turns two metric sets into a verdict: the candidate passes when no guarded metric is worse
than the champion's by more than the tolerance, and every absolute floor is met.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from events.contract import ENGAGED_OUTCOMES
from serving.encoder import UserSequence
from serving.retriever import LoadedVersion
from training import metrics

WARMUP_USERS = 5


def evaluate_version(version: LoadedVersion, sequences: Mapping[int, UserSequence], day_events: pd.DataFrame,
                     *, k: int = 100, outcome_weights: Mapping[str, float] | None = None,
                     outcomes: Sequence[str] = ("click", "save")) -> dict[str, float]:
    """Metrics of `version` on `day_events` (contract rows of the evaluation day, one surface)."""
    engaged = day_events[day_events["outcome"].isin(ENGAGED_OUTCOMES)]
    users = sorted(set(engaged["user_id"].tolist()))
    by_user = {u: g for u, g in engaged.groupby("user_id")}
    retrieved, future, future_by_outcome, latencies = [], [], {o: [] for o in outcomes}, []
    for user in users[:WARMUP_USERS]:  # first calls pay one-off costs (allocations, kernel setup)
        version.retrieve(sequences.get(user, UserSequence.empty()), k, outcome_weights)
    for user in users:
        seq = sequences.get(user, UserSequence.empty())
        result = version.retrieve(seq, k, outcome_weights)
        latencies.append(sum(result.timings_ms.values()))
        retrieved.append([c.item for c in result.candidates])
        mine = by_user[user]
        future.append(set(mine["item_id"].tolist()))
        for o in outcomes:
            future_by_outcome[o].append(set(mine.loc[mine["outcome"] == o, "item_id"].tolist()))
    out = {
        f"recall@{k}": metrics.unordered_recall_at_k(retrieved, future, k) if users else float("nan"),
        "distinct_per_list": metrics.distinct_items_per_list(retrieved) if users else 0.0,
        "coverage": metrics.catalogue_coverage(retrieved, len(version.item_ids)) if users else 0.0,
        "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else 0.0,
        "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies else 0.0,
        "users": float(len(users)),
    }
    for o, r in metrics.recall_by_outcome(retrieved, future_by_outcome, k).items():
        out[f"recall@{k}/{o}"] = r
    return out


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


def gate(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
         policy: GatePolicy = GatePolicy()) -> tuple[bool, list[str]]:
    """(passed, reasons): reasons name every rule the candidate broke (empty when it passed)."""
    reasons = []
    for name, floor in policy.floors.items():
        value = candidate.get(name, float("nan"))
        if not value >= floor:
            reasons.append(f"{name} = {value:.4f} is below the floor {floor:.4f}")
    if candidate.get("latency_p99_ms", 0.0) > policy.max_latency_p99_ms:
        reasons.append(f"latency_p99_ms = {candidate['latency_p99_ms']:.1f} above {policy.max_latency_p99_ms:.0f}")
    if champion and champion.get("latency_p50_ms"):
        ratio = candidate.get("latency_p50_ms", 0.0) / champion["latency_p50_ms"]
        if ratio > policy.max_latency_ratio:
            reasons.append(f"latency_p50_ms is {ratio:.2f}x the champion's (limit {policy.max_latency_ratio:.2f}x)")
    if champion:
        for name in policy.guarded:
            cand, champ = candidate.get(name), champion.get(name)
            if cand is None or champ is None or np.isnan(champ):
                continue
            if np.isnan(cand) or cand < champ * (1 - policy.tolerance):
                reasons.append(f"{name} = {cand:.4f} is worse than the champion's {champ:.4f} "
                               f"by more than {policy.tolerance:.0%}")
    return not reasons, reasons
