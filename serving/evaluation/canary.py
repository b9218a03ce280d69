"""Canary evaluation: a published version against the champion on a day neither trained on.

For every user with an engagement on the evaluation day, the version retrieves k candidates from
the user's sequence as of the start of that day (point in time: Feast features at day start),
through the same code serving runs (`LoadedVersion.retrieve`: queries per (outcome, offset),
ANN search, merge by outcome weights). Metrics:

- ``recall@k/<outcome>``: unordered recall of the user's items engaged with that outcome on the
  day (training.metrics.unordered_recall_at_k), and ``recall@k`` over all engaged items;
- ``distinct_per_list`` and ``coverage`` (diversity);
- ``latency_p50_ms`` / ``latency_p99_ms`` of retrieval per user (`interleaved_retrievals`: compared
  versions measured in one process on repeated, interleaved requests);
- ``<figure>_se``: the standard error over the day's users (recall) or slates (ranking);
- ranking (a day with impressions, ``impression``): every session's slate (the items shown in it)
  scored by the version for the user as of the day's start (``LoadedVersion.score_items``: the
  ranking head's probabilities; a version without one, its retrieval scores):
  ``slate_auc/<outcome>``, the mean over slates of the AUC of the outcome's score against whether
  the item got that outcome in the session, and ``slate_ndcg@10``, the mean NDCG@10 of the slate
  ordered by the combined score (outcome weights applied) with gain 1 per engaged item; items the
  version does not know are left out of its slates.

Engaged outcomes are the vocabulary's (``engaged``; default the built-in data's), measured per
outcome for ``outcomes`` (default click and save). ``evaluate_popularity`` scores the popularity
baseline on the same users, day and protocol: the k items most engaged with in a training window,
the user's seen items left out as serving leaves them out; where the vocabulary allows repeats,
`serving.evaluation.buy_again` adds the "buy again" baseline (reported, not gated).

In a closed loop (the day's impressions partly chosen by the system itself), the day's rows on
slots that one of the compared versions served are left out first (`not_served_by`): the
champion's own recommendations would otherwise be its held-out targets, and a candidate that has
never served could not match it (the incumbent's feedback-loop advantage). Both versions are then
judged on what neither of them chose: organic impressions and the other arms' slots.

The gate's rules on these figures are serving.evaluation.gate's (ranking metrics may fall by an
absolute tolerance or, when larger, 1.96 standard errors of the difference of the two slate
means, taken as independent: the same slates make the true difference less noisy, so the
allowance errs towards letting the online canary decide).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from events.contract import ENGAGED_OUTCOMES
from serving.service.encoder import UserSequence
from serving.service.retriever import LoadedVersion
from training import metrics

WARMUP_USERS = 5


def _futures(
    day_events: pd.DataFrame, engaged_outcomes: Sequence[str], outcomes: Sequence[str]
) -> tuple[list[int], list[set], dict[str, list[set]]]:
    """(users with an engagement on the day, each one's engaged items, per outcome)."""
    engaged = day_events[day_events["outcome"].isin(list(engaged_outcomes))]
    users = sorted(set(engaged["user_id"].tolist()))
    by_user = {u: g for u, g in engaged.groupby("user_id")}
    future = [set(by_user[u]["item_id"].tolist()) for u in users]
    future_by_outcome = {
        o: [set(by_user[u].loc[by_user[u]["outcome"] == o, "item_id"].tolist()) for u in users] for o in outcomes
    }
    return users, future, future_by_outcome


def _recall_figures(
    retrieved: list[list[int]], future: list[set], future_by_outcome: dict[str, list[set]], k: int, n_items: int
) -> dict[str, float]:
    users = len(retrieved)
    out = {
        f"recall@{k}": metrics.unordered_recall_at_k(retrieved, future, k) if users else float("nan"),
        "distinct_per_list": metrics.distinct_items_per_list(retrieved) if users else 0.0,
        "coverage": metrics.catalogue_coverage(retrieved, n_items) if users else 0.0,
    }
    for o, r in metrics.recall_by_outcome(retrieved, future_by_outcome, k).items():
        out[f"recall@{k}/{o}"] = r
    # the figures' sampling error over the day's users: the gate allows a fall within it
    out[f"recall@{k}_se"] = metrics.se_of_slates(metrics.recall_per_user(retrieved, future, k))
    for o, targets in future_by_outcome.items():
        out[f"recall@{k}/{o}_se"] = metrics.se_of_slates(metrics.recall_per_user(retrieved, targets, k))
    return out


def not_served_by(day_events: pd.DataFrame, serving_log: pd.DataFrame, versions: Sequence[str]) -> pd.DataFrame:
    """`day_events` without the rows on slots that one of `versions` served that day: an event
    whose (user, session, surface, item) is in the serving log under one of those versions (the
    impression and whatever the user did with it there)."""
    served = serving_log.loc[
        serving_log["version"].isin([v for v in versions if v]), ["user_id", "session_id", "surface", "item_id"]
    ].drop_duplicates()
    if served.empty or day_events.empty:
        return day_events
    key = ["user_id", "session_id", "surface", "item_id"]
    hit = day_events[key].merge(served, on=key, how="left", indicator=True)["_merge"] == "both"
    return day_events[~hit.to_numpy(bool)]


def day_slates(day_events: pd.DataFrame, impression: str) -> list[tuple[int, str, np.ndarray, dict[str, np.ndarray]]]:
    """The day's slates: (user, surface, items shown in the session, {outcome: whether each item
    got it there}) per (user, session, surface) with an impression."""
    key = ["user_id", "session_id", "surface"]
    flagged = day_events.assign(_shown=day_events["outcome"] == impression)
    rows = day_events[flagged.groupby(key)["_shown"].transform("any").to_numpy(bool)]
    out = []
    for (user, _, surface), g in rows.groupby(key, sort=True):
        items = np.array(sorted(set(g["item_id"].tolist())), np.int64)
        got = {
            o: np.isin(items, g.loc[g["outcome"] == o, "item_id"].to_numpy()) for o in set(g["outcome"]) - {impression}
        }
        out.append((int(user), str(surface), items, got))
    return out


def evaluate_ranking(
    version: LoadedVersion,
    sequences: Mapping[int, UserSequence],
    day_events: pd.DataFrame,
    *,
    impression: str,
    outcomes: Sequence[str] = ("click", "save"),
    engaged: Sequence[str] = tuple(sorted(ENGAGED_OUTCOMES)),
    outcome_weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Slate AUC per outcome and NDCG@10 of the ranked slates (see the module docstring)."""
    slates = day_slates(day_events, impression)
    by_user: dict[tuple[int, str], list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {}
    for user, surface, items, got in slates:
        by_user.setdefault((user, surface), []).append((items, got))
    auc: dict[str, list[float]] = {o: [] for o in outcomes}
    ndcg, ranked_by = [], ""
    for (user, surface), user_slates in by_user.items():
        everything = np.unique(np.concatenate([items for items, _ in user_slates]))
        known, per_outcome, combined, ranked_by = version.score_items(
            sequences.get(user, UserSequence.empty()), everything.tolist(), outcomes, outcome_weights, surface
        )
        where = {int(i): j for j, i in enumerate(known.tolist())}
        for items, got in user_slates:
            keep = np.array([int(i) in where for i in items], bool)
            at = np.array([where[int(i)] for i in items[keep]], np.int64)
            for o in outcomes:
                if o in per_outcome and o in got:
                    auc[o].append(metrics.slate_auc(per_outcome[o][at], got[o][keep]))
            gain = np.zeros(int(keep.sum()))
            for o in engaged:
                if o in got:
                    gain = np.maximum(gain, got[o][keep].astype(np.float64))
            ndcg.append(metrics.ndcg_at_k(combined[at], gain, 10))
    out = {f"slate_auc/{o}": metrics.mean_of_slates(v) for o, v in auc.items()}
    out["slate_ndcg@10"] = metrics.mean_of_slates(ndcg)
    for o, v in auc.items():  # the figures' noise: the gate allows a fall within it
        out[f"slate_auc/{o}_se"] = metrics.se_of_slates(v)
    out["slate_ndcg@10_se"] = metrics.se_of_slates(ndcg)
    out["slates"] = float(len(slates))
    out["ranked_by_ranking_head"] = float(ranked_by == "ranking_head")
    return out


def interleaved_retrievals(
    versions: Mapping[str, LoadedVersion],
    sequences: Mapping[int, UserSequence],
    users: Sequence[int],
    *,
    k: int = 100,
    outcome_weights: Mapping[str, float] | None = None,
    rounds: int = 3,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[int, list[int]]]]:
    """Retrieval latency of each version, measured in this process on repeated, interleaved
    requests: every user's request is sent to each version in turn, the order alternating from
    one request to the next (ABBA...), `rounds` times, so a load spike on a shared machine falls
    on all versions alike. Returns ({role: {"latency_p50_ms", "latency_p99_ms",
    "latency_samples"}}, {role: {user: the items retrieved}}): the lists serve
    `evaluate_version(..., retrieved_before=...)`, which then does not ask for them again."""
    roles = list(versions)
    times: dict[str, list[float]] = {role: [] for role in roles}
    lists: dict[str, dict[int, list[int]]] = {role: {} for role in roles}
    for user in users[:WARMUP_USERS]:  # first calls pay one-off costs (allocations, kernel setup)
        for role in roles:
            versions[role].retrieve(sequences.get(user, UserSequence.empty()), k, outcome_weights)
    n = 0
    for _ in range(rounds):
        for user in users:
            seq = sequences.get(user, UserSequence.empty())
            for role in roles if n % 2 == 0 else roles[::-1]:
                result = versions[role].retrieve(seq, k, outcome_weights)
                times[role].append(sum(result.timings_ms.values()))
                lists[role].setdefault(int(user), [c.item for c in result.candidates])
            n += 1
    figures = {
        role: {
            "latency_p50_ms": float(np.percentile(t, 50)) if t else 0.0,
            "latency_p99_ms": float(np.percentile(t, 99)) if t else 0.0,
            "latency_samples": float(len(t)),
        }
        for role, t in times.items()
    }
    return figures, lists


def evaluate_version(
    version: LoadedVersion,
    sequences: Mapping[int, UserSequence],
    day_events: pd.DataFrame,
    *,
    k: int = 100,
    outcome_weights: Mapping[str, float] | None = None,
    outcomes: Sequence[str] = ("click", "save"),
    engaged: Sequence[str] = tuple(sorted(ENGAGED_OUTCOMES)),
    impression: str | None = None,
    retrieved_before: Mapping[int, Sequence[int]] | None = None,
) -> dict[str, float]:
    """Metrics of `version` on `day_events` (contract rows of the evaluation day, one surface);
    with `impression` (the vocabulary's) the ranking metrics of the day's slates too. A user's
    list in `retrieved_before` (the same version, k and weights: `interleaved_retrievals`) is
    taken as it is; the latency figures are then of the users asked here only."""
    users, future, future_by_outcome = _futures(day_events, engaged, outcomes)
    retrieved_before = retrieved_before or {}
    retrieved, latencies = [], []
    for user in [u for u in users if u not in retrieved_before][:WARMUP_USERS]:  # first calls pay one-off costs
        version.retrieve(sequences.get(user, UserSequence.empty()), k, outcome_weights)
    for user in users:
        if user in retrieved_before:
            retrieved.append(list(retrieved_before[user]))
            continue
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
    if impression is not None and (day_events["outcome"] == impression).any():
        out.update(
            evaluate_ranking(
                version,
                sequences,
                day_events,
                impression=impression,
                outcomes=outcomes,
                engaged=engaged,
                outcome_weights=outcome_weights,
            )
        )
    return out


def evaluate_popularity(
    train_events: pd.DataFrame,
    sequences: Mapping[int, UserSequence],
    day_events: pd.DataFrame,
    *,
    k: int = 100,
    outcomes: Sequence[str] = ("click", "save"),
    engaged: Sequence[str] = tuple(sorted(ENGAGED_OUTCOMES)),
) -> dict[str, float]:
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
    return {
        **_recall_figures(retrieved, future, future_by_outcome, k, max(len(popular), 1)),
        "users": float(len(users)),
    }
