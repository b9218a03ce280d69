"""Evaluation metrics: public leave-one-out protocol, PinRec protocol, diversity.

Pure numpy / torch functions with no model dependency (and no dagster): the training loop, the
benchmarks, the canary asset checks and the serving stage all call these.

Public protocol (design "Evaluation" (a)): leave-one-out, full-corpus ranking, every item the user
already interacted with is filtered out except the held-out target, HR@k and NDCG@k.

* ``full_ranking_ranks`` turns a score matrix into 1-based ranks of the targets.
* Tie rule (default ``ties="pessimistic"``): rank = number of unfiltered items whose score is
  ``>=`` the target's score, the target included; i.e. every item tied with the target is counted
  as ranked above it. With continuous model scores ties almost never happen and this equals the
  common ``1 + #{strictly greater}`` rule (``ties="optimistic"``); the pessimistic default only
  matters for degenerate scorers (a collapsed model that scores every item the same, or the
  popularity baseline's many equal counts), which would otherwise look perfect. A NaN target
  score always gets the worst rank, ``n_items``.
* ``rank_metrics`` averages HR@k (rank <= k) and NDCG@k (one relevant item:
  ``1 / log2(rank + 1)`` if rank <= k else 0) over users.

PinRec protocol (design "Evaluation" (b)): ``unordered_recall_at_k`` compares the union of items
retrieved by all generated queries with every item the user engaged with in a future window,
regardless of order, normalised by ``min(k, |future|)`` so a user with fewer than ``k`` future
items can still reach 1.0; ``recall_by_outcome`` reports it per outcome.

Diversity (design "Evaluation" (c)): ``distinct_items_per_list`` and ``catalogue_coverage``.

The request-time merge of the per-query candidates is in ``training.merge``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

DEFAULT_KS: tuple[int, ...] = (10, 50)
TIE_RULES: tuple[str, ...] = ("pessimistic", "optimistic")

# --------------------------------------------------------------------------------------------
# Public protocol: leave-one-out, full ranking
# --------------------------------------------------------------------------------------------


def rank_metrics(ranks: Any, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@k and NDCG@k averaged over users, from 1-based ranks of each user's held-out item.

    ``ranks`` is anything array-like (list, numpy array, torch tensor). Returns
    ``{"hr@10": ..., "ndcg@10": ..., "hr@50": ..., "ndcg@50": ...}`` (keys in ``ks`` order).
    """
    if isinstance(ranks, torch.Tensor):
        r = ranks.detach().to("cpu", torch.float64).numpy().reshape(-1)
    else:
        r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ValueError("rank_metrics needs at least one rank")
    if np.isnan(r).any() or (r < 1).any():
        raise ValueError("ranks must be 1-based (>= 1) and not NaN")
    out: dict[str, float] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        hit = r <= k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0).mean())
    return out


def _seen_index(seen: Any, batch: int, device: torch.device, pad: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows, cols) of the seen entries, from a list of lists or a padded 2-D tensor/array."""
    if seen is None:
        return None
    if isinstance(seen, (torch.Tensor, np.ndarray)):
        s = torch.as_tensor(seen, device=device)
        if s.dim() != 2 or s.shape[0] != batch:
            raise ValueError(f"seen tensor must be [B={batch}, L], got {tuple(s.shape)}")
        s = s.long()
        valid = (s >= 0) & (s != pad)
        rows, pos = valid.nonzero(as_tuple=True)
        return rows, s[rows, pos]
    if len(seen) != batch:
        raise ValueError(f"seen has {len(seen)} lists for a batch of {batch}")
    lengths = np.fromiter((len(x) for x in seen), dtype=np.int64, count=batch)
    total = int(lengths.sum())
    if total == 0:
        return None
    cols_np = np.fromiter(itertools.chain.from_iterable(seen), dtype=np.int64, count=total)
    rows_np = np.repeat(np.arange(batch, dtype=np.int64), lengths)
    keep = (cols_np >= 0) & (cols_np != pad)
    rows = torch.from_numpy(rows_np[keep]).to(device)
    cols = torch.from_numpy(cols_np[keep]).to(device)
    return rows, cols


def full_ranking_ranks(
    scores: torch.Tensor,
    targets: Any,
    seen: Any = None,
    *,
    ties: str = "pessimistic",
    pad: int = -1,
) -> torch.Tensor:
    """1-based rank of each target among all items, seen items filtered out (the target kept).

    scores:  float ``[B, n_items]``; column ``i`` is item index ``i``. Not modified.
    targets: ``[B]`` item indices (tensor, array or list).
    seen:    the items each user already interacted with, either a list of ``B`` lists of item
             indices or a padded ``[B, L]`` integer tensor/array; negative entries and entries
             equal to ``pad`` are padding. Seen items get score ``-inf`` except the target
             itself (so a target that was also seen earlier is still ranked).
    ties:    ``"pessimistic"`` (default): rank = #{items with score >= target score};
             ``"optimistic"``: rank = 1 + #{items with score > target score}.

    Returns a LongTensor ``[B]`` on ``scores.device``. A NaN target score gets rank ``n_items``.
    Cost: one copy of ``scores`` plus one comparison pass; B=512 x 4000 items takes a few ms.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, n_items], got {tuple(scores.shape)}")
    batch, n_items = scores.shape
    device = scores.device
    tgt = torch.as_tensor(targets, device=device).long().reshape(-1)
    if tgt.numel() != batch:
        raise ValueError(f"{tgt.numel()} targets for a batch of {batch}")
    if batch == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if int(tgt.min()) < 0 or int(tgt.max()) >= n_items:
        raise ValueError(f"targets must be item indices in [0, {n_items})")

    s = scores.detach().clone(memory_format=torch.contiguous_format)
    arange = torch.arange(batch, device=device)
    target_scores = s[arange, tgt].clone()
    idx = _seen_index(seen, batch, device, pad)
    if idx is not None:
        rows, cols = idx
        if cols.numel() and int(cols.max()) >= n_items:
            raise ValueError(f"seen item index {int(cols.max())} >= n_items={n_items}")
        s[rows, cols] = float("-inf")
        s[arange, tgt] = target_scores  # the target is never filtered
    t = target_scores.unsqueeze(1)
    if ties == "pessimistic":
        ranks = (s >= t).sum(dim=1)
    else:
        ranks = (s > t).sum(dim=1) + 1
    nan_target = torch.isnan(target_scores)
    if bool(nan_target.any()):
        ranks = torch.where(nan_target, torch.full_like(ranks, n_items), ranks)
    # A -inf target ties with every filtered item under the pessimistic rule; cap at n_items.
    return ranks.clamp_(min=1, max=n_items)


Batch = tuple[Any, Any, Any]


def collect_ranks(
    score_fn: Callable[[Any], torch.Tensor],
    batches: Iterable[Batch],
    *,
    ties: str = "pessimistic",
    pad: int = -1,
) -> torch.Tensor:
    """Ranks of every user's target over all ``(inputs, targets, seen)`` batches (CPU LongTensor).

    ``score_fn(inputs)`` must return ``[B, n_items]`` scores; it is called under
    ``torch.inference_mode()``. Use this when per-user ranks are needed (breakdowns, confidence
    intervals); ``evaluate_public`` is the one-call version.
    """
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        for inputs, targets, seen in batches:
            scores = score_fn(inputs)
            out.append(full_ranking_ranks(scores, targets, seen, ties=ties, pad=pad).cpu())
    if not out:
        raise ValueError("no batches to evaluate")
    return torch.cat(out)


def evaluate_public(
    score_fn: Callable[[Any], torch.Tensor],
    batches: Iterable[Batch],
    ks: Iterable[int] = DEFAULT_KS,
    *,
    ties: str = "pessimistic",
    pad: int = -1,
) -> dict[str, float]:
    """Public protocol in one call: ``{"hr@10", "ndcg@10", "hr@50", "ndcg@50"}`` over all users.

    ``batches`` yields ``(inputs, targets, seen)``; ``inputs`` is passed untouched to
    ``score_fn(inputs) -> Tensor[B, n_items]``; ``targets`` and ``seen`` are as in
    ``full_ranking_ranks``. Example::

        metrics = evaluate_public(lambda x: model.score_all(x), loader)
        metrics = evaluate_public(popularity_scorer(popularity_scores(counts, n)), loader)
    """
    return rank_metrics(collect_ranks(score_fn, batches, ties=ties, pad=pad), ks)


# --------------------------------------------------------------------------------------------
# Popularity baseline
# --------------------------------------------------------------------------------------------


def item_counts(item_ids: Any, n_items: int) -> np.ndarray:
    """Interaction count per item index from a flat array of training item indices."""
    ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= n_items):
        raise ValueError(f"item indices must be in [0, {n_items})")
    return np.bincount(ids, minlength=n_items)


def popularity_scores(train_item_counts: Any, n_items: int) -> torch.Tensor:
    """Float32 ``[n_items]`` popularity scores (the training interaction counts).

    ``train_item_counts`` is either a mapping ``{item_index: count}`` or a 1-D sequence of counts
    indexed by item (length <= ``n_items``; missing tail items count 0). For a flat list of
    interactions use ``item_counts`` first.
    """
    out = torch.zeros(n_items, dtype=torch.float32)
    if isinstance(train_item_counts, Mapping):
        for item, count in train_item_counts.items():
            i = int(item)
            if not 0 <= i < n_items:
                raise ValueError(f"item index {i} outside [0, {n_items})")
            out[i] = float(count)
        return out
    counts = torch.as_tensor(np.asarray(train_item_counts, dtype=np.float64)).reshape(-1)
    if counts.numel() > n_items:
        raise ValueError(f"{counts.numel()} counts for n_items={n_items}")
    out[: counts.numel()] = counts.to(torch.float32)
    return out


def popularity_scorer(pop_scores: torch.Tensor) -> Callable[[Any], torch.Tensor]:
    """A ``score_fn`` for ``evaluate_public`` giving every user the same popularity scores.

    The batch size is taken from ``inputs`` (``inputs.shape[0]`` for arrays/tensors, ``len``
    otherwise); seen filtering still happens in ``full_ranking_ranks``.
    """
    pop = torch.as_tensor(pop_scores, dtype=torch.float32).reshape(1, -1)

    def score_fn(inputs: Any) -> torch.Tensor:
        batch = int(inputs.shape[0]) if hasattr(inputs, "shape") else len(inputs)
        return pop.expand(batch, -1)

    return score_fn


# --------------------------------------------------------------------------------------------
# PinRec protocol: unordered recall over a future window
# --------------------------------------------------------------------------------------------


def unordered_recall_at_k(
    retrieved: Sequence[Sequence[Hashable]],
    future: Sequence[Iterable[Hashable]],
    k: int | None = None,
) -> float:
    """Mean over users with a non-empty future of ``|R_u ∩ F_u| / min(k_u, |F_u|)``.

    ``R_u`` is the set of the first ``k`` entries of ``retrieved[u]`` (all entries when ``k`` is
    None; then ``k_u = len(retrieved[u])``, otherwise ``k_u = k``). Duplicate entries take a slot
    but count once, so a list that repeats items is penalised. ``F_u`` is the set of items the
    user engaged with in the future window (duplicates collapse). Order inside the list does not
    matter (unordered). Users whose future is empty are skipped; an empty retrieved list scores
    0. Returns NaN when no user has a future item.
    """
    per_user = recall_per_user(retrieved, future, k)
    return float(sum(per_user) / len(per_user)) if per_user else float("nan")


def recall_per_user(
    retrieved: Sequence[Sequence[Hashable]],
    future: Sequence[Iterable[Hashable]],
    k: int | None = None,
) -> list[float]:
    """Each user's term of `unordered_recall_at_k` (users with a non-empty future, in order): the
    figures its standard error is taken over."""
    if len(retrieved) != len(future):
        raise ValueError(f"{len(retrieved)} retrieved lists for {len(future)} futures")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = []
    for items, fut in zip(retrieved, future):
        f = fut if isinstance(fut, (set, frozenset)) else set(fut)
        if not f:
            continue
        slots = list(items) if k is None else list(items)[:k]
        k_u = len(slots) if k is None else k
        denom = min(k_u, len(f))
        out.append(len(set(slots) & f) / denom if denom > 0 else 0.0)
    return out


def recall_by_outcome(
    retrieved: Sequence[Sequence[Any]] | Mapping[Any, Sequence[Sequence[Any]]],
    future_items_by_outcome: Mapping[Any, Sequence[Iterable[Any]]],
    k: int | None = None,
) -> dict[Any, float]:
    """``unordered_recall_at_k`` per outcome: ``{outcome: recall}``.

    ``retrieved`` is either one list per user (the merged output of all generated queries,
    scored against each outcome's future items) or a mapping ``{outcome: lists per user}`` when
    each outcome has its own retrieval (e.g. queries conditioned on that outcome).
    """
    out: dict[Any, float] = {}
    for outcome, future in future_items_by_outcome.items():
        lists = retrieved[outcome] if isinstance(retrieved, Mapping) else retrieved
        out[outcome] = unordered_recall_at_k(lists, future, k)
    return out


# --------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------


def distinct_items_per_list(lists: Iterable[Iterable[Hashable]]) -> float:
    """Mean number of distinct items per list (0.0 for no lists)."""
    counts = [len(set(items)) for items in lists]
    return float(sum(counts) / len(counts)) if counts else 0.0


def catalogue_coverage(lists: Iterable[Iterable[Hashable]], n_items: int) -> float:
    """Fraction of the ``n_items`` catalogue that appears in at least one list."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    union: set[Hashable] = set()
    for items in lists:
        union.update(items)
    if len(union) > n_items:
        raise ValueError(f"{len(union)} distinct items but a catalogue of {n_items}")
    return len(union) / n_items


# --------------------------------------------------------------------------------------------
# Ranking a slate (the ranking head; UniPinRec)
# --------------------------------------------------------------------------------------------


def slate_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """AUC of one slate: the probability that a positive item scores above a negative one (ties
    count half). NaN when the slate has no positive or no negative."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks (1-based) of tied scores
    starts = np.r_[0, np.nonzero(np.diff(sorted_s))[0] + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ndcg_at_k(scores: Sequence[float], gains: Sequence[float], k: int = 10) -> float:
    """NDCG@k of one slate ordered by `scores` (descending, ties in input order), with the items'
    `gains`; NaN when no item has a gain."""
    g = np.asarray(gains, np.float64)
    if not (g > 0).any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((g[order] * discount[: len(order)]).sum())
    ideal = np.sort(g)[::-1][:k]
    return dcg / float((ideal * discount[: len(ideal)]).sum())


def mean_of_slates(values: Iterable[float]) -> float:
    """Mean over the slates where a figure is defined (NaN when none is)."""
    v = [x for x in values if x == x]
    return float(np.mean(v)) if v else float("nan")


def se_of_slates(values: Iterable[float]) -> float:
    """Standard error of `mean_of_slates` (sample standard deviation / sqrt(n) over the slates
    where the figure is defined; NaN with fewer than two)."""
    v = [x for x in values if x == x]
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
