"""Evaluation drivers over `training.metrics`: public protocol, PinRec protocol, diversity.

* `evaluate_public_model(model, evalset, ...)`: leave-one-out, full-corpus ranking with seen
  items filtered; the score combines per-outcome "next" queries with weights fixed in advance
  (`mix`), never the target's own outcome.
* `evaluate_popularity(train, evalset)`: the popularity baseline on the same protocol.
* `evaluate_pinrec(model, history, future, budget, k, ...)`: every (outcome, offset) query of the
  budget retrieves top items (exact search over the item table, seen items excluded); results
  are merged by outcome budget (`training.merge.merge_by_budget`) and scored with unordered recall@k
  over the future window, overall and per outcome, plus diversity.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from training import metrics
from training.data import (
    EvalSet,
    Sequences,
    eval_batches,
    input_batch,
    last_window_index,
)
from training.merge import merge_by_budget
from training.model import PinRec
from training.module import mixture_scores


@torch.no_grad()
def evaluate_public_model(
    model: PinRec, ev: EvalSet, mix: list[tuple[str, float]] | None = None, batch_size: int = 512
) -> dict[str, float]:
    """HR@10/NDCG@10/HR@50/NDCG@50 of `model` on `ev` (public protocol)."""
    model.eval()
    mix = mix or [("any", 1.0)]
    return metrics.evaluate_public(
        lambda x: mixture_scores(model, x, mix), eval_batches(ev, model.cfg.max_len, batch_size)
    )


def evaluate_popularity(train: Sequences, ev: EvalSet, batch_size: int = 512) -> dict[str, float]:
    """The popularity baseline (training interaction counts) on the public protocol."""
    counts = metrics.item_counts(train.items, train.n_items + 1)
    counts[0] = -1
    scorer = metrics.popularity_scorer(metrics.popularity_scores(counts, train.n_items + 1))
    return metrics.evaluate_public(lambda x: scorer(x["items"]), eval_batches(ev, 1, batch_size))


@torch.no_grad()
def retrieve(
    model: PinRec,
    history: Sequences,
    budget: Mapping[tuple[str, str], float] | list[tuple[str, str]],
    k: int,
    exclude_seen: bool = True,
    batch_size: int = 256,
) -> list[list[tuple[int, float, str, str]]]:
    """Per user of `history`: the (outcome, offset) queries of `budget`, each retrieving its top
    `k` items (exact inner product over the item table), as (item index, score, outcome, offset)."""
    model.eval()
    pairs = list(budget)
    E = model.item_embeddings()
    out: list[list[tuple[int, float, str, str]]] = []
    for a in range(0, history.n_users, batch_size):
        users = np.arange(a, min(a + batch_size, history.n_users))
        idx = last_window_index(history, model.cfg.max_len, users)
        g = model.generate_queries(input_batch(history, idx), pairs)
        s = torch.einsum("bqd,vd->bqv", g["queries"], E)  # (B, Q, V+1)
        s[..., 0] = float("-inf")
        if exclude_seen:
            for r, u in enumerate(users):
                seen = torch.from_numpy(history.items[history.ptr[u] : history.ptr[u + 1]])
                s[r, :, seen] = float("-inf")
        top = s.topk(min(k, s.shape[-1] - 1), dim=-1)
        for r in range(len(users)):
            out.append(
                [
                    (int(i), float(v), g["outcomes"][j], g["offsets"][j])
                    for j in range(len(pairs))
                    for i, v in zip(top.indices[r, j].tolist(), top.values[r, j].tolist())
                    if v > float("-inf")
                ]
            )
    return out


def evaluate_pinrec(
    model: PinRec,
    history: Sequences,
    future: Sequences,
    budget: Mapping[tuple[str, str], float],
    k: int,
    outcomes: list[str] | None = None,
) -> dict[str, float]:
    """PinRec protocol for the users of `history` that have engaged items in `future`.

    `budget` maps (outcome, offset) -> weight; an outcome's share of the k merged slots is the
    sum of its queries' weights. Returns unordered recall@k overall (any future engagement),
    per outcome (`recall@k/<outcome>`), distinct items per list and catalogue coverage.
    """
    fut_user = {int(u): i for i, u in enumerate(future.user_ids)}
    keep = np.array([int(u) in fut_user for u in history.user_ids])
    hist = history.take(np.repeat(keep, history.lengths))
    per_query = retrieve(model, hist, list(budget), k)
    weights: dict[str, float] = {}
    for (o, _), w in budget.items():
        weights[o] = weights.get(o, 0.0) + float(w)
    merged = []
    for cands in per_query:
        lists = {}
        for item, score, o, f in cands:
            lists.setdefault((o, f), ([], []))
            lists[(o, f)][0].append(item)
            lists[(o, f)][1].append(score)
        m = merge_by_budget([(o, f, it, sc) for (o, f), (it, sc) in lists.items()], weights, k)
        merged.append([c.item for c in m])
    fut_items, fut_by_outcome = [], {o: [] for o in (outcomes or [])}
    for u in hist.user_ids:
        j = fut_user[int(u)]
        sl = slice(future.ptr[j], future.ptr[j + 1])
        fut_items.append(set(future.items[sl].tolist()))
        for o in fut_by_outcome:
            code = model.cfg.outcomes.index(o)
            fut_by_outcome[o].append(set(future.items[sl][future.outcomes[sl] == code].tolist()))
    res = {f"recall@{k}": metrics.unordered_recall_at_k(merged, fut_items, k)}
    for o, r in metrics.recall_by_outcome(merged, fut_by_outcome, k).items():
        res[f"recall@{k}/{o}"] = r
    res["distinct_per_list"] = metrics.distinct_items_per_list(merged)
    res["coverage"] = metrics.catalogue_coverage(merged, history.n_items)
    res["users"] = len(merged)
    return res
