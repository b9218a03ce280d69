"""Multi-token merging: the per-(outcome, offset) ANN results of one request into one
de-duplicated candidate list, each outcome getting a share of ``k`` proportional to its weight.

Plain Python over faiss output, so the serving path, the canary and the offline evaluation all
call the same function (no model dependency, no dagster).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple


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
