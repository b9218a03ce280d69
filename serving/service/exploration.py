"""Exploration: a small share of served slots filled with uniformly random items, each slot's
propensity logged, so that logs can judge any policy without the champion's exposure bias.

`explore(items, k, catalogue, share, rng)`: each of the first `k` slots is, with probability
`share`, an item drawn uniformly from `catalogue` (not already in the list, not in `exclude`);
otherwise the ranked list's next item. Returns the list and per slot its propensity: 1 for a
ranked slot (the ranked list is deterministic given the request), ``share / len(catalogue)``
for an exploration slot (the chance that this item was drawn into this slot). The replay and
inverse-propensity estimators of `serving.evaluation.yardstick` read those slots back.

`ExplorationConfig`: the share per surface. The simulated world's default is a few percent;
a log of your own (`--source parquet`) has none unless set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_SIMULATED_SHARE = 0.05


@dataclass(frozen=True)
class ExplorationConfig:
    """The exploration share of served slots per surface (0: none)."""

    shares: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for surface, share in self.shares.items():
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
                raise ValueError(f"exploration share of {surface!r} must be a number in [0, 1), got {share!r}")

    @classmethod
    def uniform(cls, share: float, surfaces: Sequence[str]) -> ExplorationConfig:
        return cls({s: float(share) for s in surfaces})

    def share(self, surface: str) -> float:
        return float(self.shares.get(surface, 0.0))


def explore(
    items: Sequence[int],
    k: int,
    catalogue: int | np.ndarray,
    share: float,
    rng: np.random.Generator,
    exclude: Sequence[int] = (),
) -> tuple[list[int], list[float]]:
    """`items` (ranked, best first) with a `share` of the first `k` slots explored (module docstring)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"exploration share must be in [0, 1), got {share}")
    pool = np.arange(catalogue) if np.isscalar(catalogue) else np.asarray(catalogue, np.int64)
    if len(pool) == 0:
        raise ValueError("exploration needs a non-empty catalogue")
    ranked = [int(i) for i in items]
    if share == 0.0:
        return ranked[:k], [1.0] * min(k, len(ranked))
    taken = set(int(i) for i in exclude)
    p_slot = share / len(pool)
    out: list[int] = []
    props: list[float] = []
    explored = rng.random(k) < share
    draws = rng.integers(0, len(pool), size=4 * k + 8)
    d = 0
    r = 0
    for slot in range(k):
        if explored[slot]:
            while d < len(draws) and int(pool[draws[d]]) in taken:
                d += 1
            if d < len(draws):
                item = int(pool[draws[d]])
                d += 1
                out.append(item)
                props.append(p_slot)
                taken.add(item)
                continue
        while r < len(ranked) and ranked[r] in taken:
            r += 1
        if r >= len(ranked):
            continue
        out.append(ranked[r])
        props.append(1.0)
        taken.add(ranked[r])
        r += 1
    return out, props
