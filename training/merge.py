"""Multi-token merging: the per-(outcome, offset) ANN results of one request into one
de-duplicated candidate list, each outcome getting a share of ``k`` proportional to its weight.

Plain Python over faiss output, so the serving path, the canary and the offline evaluation all
call the same rule (no model dependency, no dagster): ``merge_by_budget`` over lists, and
``merge_rows``, the same rule over a faiss result's arrays (the serving path; a test proves the
two agree).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np


class Candidate(NamedTuple):
    """One merged candidate: a plain tuple ``(item, score, outcome, offset)``."""

    item: int
    score: float
    outcome: Hashable
    offset: Hashable


def budget_shares(outcome_weights: Mapping[Hashable, float], k: int) -> dict[Hashable, int]:
    """``floor(k * w / sum(w))`` slots per outcome (outcomes with weight 0 get 0).

    The weights are normalised before anything is multiplied (first by the largest, then by
    the sum), so any finite weights work, from subnormal to 1e308: neither the sum nor
    ``k * w`` overflows to infinity."""
    values = [float(w) for w in outcome_weights.values()]
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"outcome weights must be finite and >= 0, got {dict(outcome_weights)}")
    largest = max(values, default=0.0)
    if largest <= 0:
        raise ValueError("at least one outcome weight must be > 0")
    scaled = {o: float(w) / largest for o, w in outcome_weights.items()}  # in [0, 1], largest 1
    total = math.fsum(scaled.values())  # in [1, len(weights)]
    # The epsilon keeps e.g. 100 * 0.29 (28.999999999999996) at 29.
    return {o: int(math.floor(k * (w / total) + 1e-9)) for o, w in scaled.items()}


def merge_by_budget(
    candidate_lists: Iterable[tuple[Any, Any, Any, Any]],
    outcome_weights: Mapping[Hashable, float] | None,
    k: int,
    exclude: Iterable[Any] | None = None,
    *,
    invalid_item: int | None = -1,
) -> list[Candidate]:
    """Merge per-(outcome, offset) retrievals into at most ``k`` de-duplicated candidates.

    candidate_lists: ``(outcome, offset, items, scores)`` per generated query; ``items`` and
        ``scores`` are parallel sequences (lists or numpy rows of a faiss result). Entries equal
        to ``invalid_item`` (faiss pads missing results with -1) and non-finite scores are
        dropped.
    outcome_weights: ``{outcome: weight >= 0}``. Outcomes absent or with weight 0 contribute
        nothing. None means equal weights over the outcomes present in ``candidate_lists``.
    exclude: items never returned (e.g. the user's seen items).

    Rule: each outcome gets ``floor(k * w / sum(w))`` slots. Quotas are filled greedily in
    global score order: the best remaining (item, score) of any outcome that still has quota is
    taken unless the item is already taken or excluded (so an item shared by two outcomes goes to
    the one where it scored higher first). Slots left over (rounding remainders and quotas an
    outcome could not fill) go to the best remaining candidates of any weighted outcome. The
    result is sorted by score, descending (ties: input order); each item appears once,
    tagged with the outcome and offset of the query that produced it.
    """
    if k <= 0:
        return []
    lists = list(candidate_lists)
    if outcome_weights is None:
        outcome_weights = {o: 1.0 for o in dict.fromkeys(c[0] for c in lists)}
        if not outcome_weights:
            return []
    quotas = budget_shares(outcome_weights, k)
    excluded = set(exclude) if exclude is not None else set()

    # One pool per weighted outcome: (-score, seq, item, offset), best first.
    pools: dict[Hashable, list[tuple[float, int, Any, Hashable]]] = {}
    seq = 0
    for outcome, offset, items, scores in lists:
        if outcome_weights.get(outcome, 0) <= 0:
            continue
        if len(items) != len(scores):
            raise ValueError(f"{len(items)} items but {len(scores)} scores for {outcome}/{offset}")
        pool = pools.setdefault(outcome, [])
        for item, score in zip(items, scores):
            it = item.item() if hasattr(item, "item") else item
            sc = float(score)
            if (invalid_item is not None and it == invalid_item) or not math.isfinite(sc):
                continue
            pool.append((-sc, seq, it, offset))
            seq += 1
    for pool in pools.values():
        pool.sort()

    taken: set[Any] = set()
    chosen: list[tuple[float, int, Candidate]] = []

    def run(outcomes_with_quota: dict[Hashable, int] | None, slots: int) -> None:
        # Heap over each eligible pool's head; pop the best, skip taken/excluded items.
        heads = {o: 0 for o in pools if outcomes_with_quota is None or outcomes_with_quota[o] > 0}
        heap = [(pools[o][0][0], pools[o][0][1], o) for o in heads if pools[o]]
        heapq.heapify(heap)
        while heap and slots > 0:
            _, _, o = heapq.heappop(heap)
            neg, s, item, offset = pools[o][heads[o]]
            heads[o] += 1
            if item not in taken and item not in excluded:
                taken.add(item)
                chosen.append((neg, s, Candidate(item, -neg, o, offset)))
                slots -= 1
                if outcomes_with_quota is not None:
                    outcomes_with_quota[o] -= 1
            more = outcomes_with_quota is None or outcomes_with_quota[o] > 0
            if more and heads[o] < len(pools[o]):
                nxt = pools[o][heads[o]]
                heapq.heappush(heap, (nxt[0], nxt[1], o))

    remaining = {o: quotas.get(o, 0) for o in pools}
    run(remaining, k)
    run(None, k - len(chosen))  # remainders, best score first; `taken` skips chosen items
    chosen.sort(key=lambda c: (c[0], c[1]))
    return [c[2] for c in chosen]


def merge_rows(
    outcomes: list[Hashable],
    offsets: list[Hashable],
    items: np.ndarray,
    scores: np.ndarray,
    valid: np.ndarray,
    outcome_weights: Mapping[Hashable, float],
    k: int,
) -> list[Candidate]:
    """``merge_by_budget`` over a faiss result, with the same rule and the same answer, in numpy.

    Row q of ``items`` / ``scores`` (Q, n) is the retrieval of query q, labelled
    ``(outcomes[q], offsets[q])``; ``valid`` (Q, n) marks the entries that count (e.g. not seen,
    not faiss's -1 padding). Equal to ``merge_by_budget([(outcomes[q], offsets[q],
    items[q][valid[q]], scores[q][valid[q]]) for q], outcome_weights, k)``: both fill the quotas
    in one global order (score descending, ties by input position), which is what the per-pool
    heap of ``merge_by_budget`` produces, then the remainders in the same order.
    """
    if k <= 0:
        return []
    quotas = budget_shares(outcome_weights, k)
    weight = np.array([outcome_weights.get(o, 0) for o in outcomes], dtype=np.float64)
    keep = valid & (weight[:, None] > 0) & np.isfinite(scores)
    rows, cols = np.nonzero(keep)  # row-major = merge_by_budget's input order
    entry_scores = scores[rows, cols].astype(np.float64)
    order = np.lexsort((np.arange(len(rows)), -entry_scores))
    rows_o = rows[order].tolist()
    items_o = items[rows, cols][order].tolist()
    scores_o = entry_scores[order].tolist()
    # one quota counter per outcome, shared by that outcome's rows
    counters = {o: [quotas.get(o, 0)] for o in outcomes}
    row_quota = [counters[o] for o in outcomes]
    to_fill = sum(counters[o][0] for o in {outcomes[r] for r in set(rows_o)})  # quotas with entries
    taken: set[int] = set()
    picked: list[int] = []  # positions in the global order
    for pos, (r, item) in enumerate(zip(rows_o, items_o)):
        if to_fill <= 0:
            break
        quota = row_quota[r]
        if quota[0] > 0 and item not in taken:
            taken.add(item)
            picked.append(pos)
            quota[0] -= 1
            to_fill -= 1
    for pos, item in enumerate(items_o):  # remainders and unfilled quotas: best first
        if len(picked) >= k:
            break
        if item not in taken:
            taken.add(item)
            picked.append(pos)
    picked.sort()
    return [Candidate(items_o[p], scores_o[p], outcomes[rows_o[p]], offsets[rows_o[p]]) for p in picked]
