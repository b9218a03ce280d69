"""Online metrics: what users did with what was served, from a day's serving log.

The serving log (`events.serving_log`) has one row per served slot a user was shown, with the
outcome that impression got (`impression` when it was not engaged, else `click`, `save`, ...).

Figures per group (a surface and an arm, or a surface and a served_by role):

- `impressions`, and `clicks_per_1k`, `saves_per_1k`, `hides_per_1k` (outcomes per 1,000 served
  impressions);
- `distinct_items`, `coverage` (distinct items served / catalogue size), `gini` (of exposure over
  the whole catalogue: 0 = every item served equally, 1 = one item takes all);
- `canary_share` (share of the group's served impressions that came from the canary);
- `users`.

`bootstrap_ci` gives 95% half-widths over users (users are the unit an experiment randomises),
and `compare_groups` the difference between two groups with its interval, and the log of their
ratio with its standard error over users (the delta method on a ratio of sums): what the online
canary gate (`serving.evaluation.online_gate`) and the closed-loop benchmark judge by.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

RATE_OUTCOMES: tuple[str, ...] = ("click", "save", "hide")
BOOTSTRAP_SAMPLES = 1000


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: equal; -> 1: concentrated)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = x.shape[0], x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float((2.0 * np.sum(np.arange(1, n + 1) * x) / (n * total)) - (n + 1.0) / n)


def per_user(log: pd.DataFrame) -> pd.DataFrame:
    """Per user: served impressions and each outcome's count (the unit of the bootstrap)."""
    counts = pd.crosstab(log["user_id"], log["outcome"]) if len(log) else pd.DataFrame()
    out = (
        pd.DataFrame({"impressions": log.groupby("user_id").size()})
        if len(log)
        else pd.DataFrame({"impressions": pd.Series([], dtype="int64")})
    )
    for outcome in RATE_OUTCOMES:
        out[outcome] = counts[outcome] if outcome in counts else 0
    return out.fillna(0).astype("int64")


def rates_per_1k(users: pd.DataFrame) -> dict[str, float]:
    impressions = float(users["impressions"].sum())
    return {
        f"{o}s_per_1k": (float(1000.0 * users[o].sum() / impressions) if impressions else float("nan"))
        for o in RATE_OUTCOMES
    }


def bootstrap_ci(users: pd.DataFrame, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, float]:
    """95% bootstrap half-widths over users of each `<outcome>s_per_1k` (a ratio of sums)."""
    if len(users) < 2:
        return {f"ci95_{o}s_per_1k": float("nan") for o in RATE_OUTCOMES}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(users), size=(samples, len(users)))
    imp = users["impressions"].to_numpy(dtype=np.float64)[idx].sum(axis=1)
    out = {}
    for o in RATE_OUTCOMES:
        rate = 1000.0 * users[o].to_numpy(dtype=np.float64)[idx].sum(axis=1) / np.maximum(imp, 1.0)
        low, high = np.percentile(rate, [2.5, 97.5])
        out[f"ci95_{o}s_per_1k"] = float((high - low) / 2.0)
    return out


def group_metrics(log: pd.DataFrame, catalogue_size: int, *, with_ci: bool = True) -> dict[str, float]:
    """The figures of one group's serving-log rows (see the module docstring)."""
    users = per_user(log)
    served = log.groupby("item_id").size().to_numpy() if len(log) else np.zeros(0)
    exposure = np.zeros(max(catalogue_size, len(served)))
    exposure[: len(served)] = served
    out = {
        "impressions": float(len(log)),
        "users": float(len(users)),
        **rates_per_1k(users),
        "distinct_items": float(log["item_id"].nunique()) if len(log) else 0.0,
        "coverage": float(log["item_id"].nunique() / catalogue_size) if catalogue_size and len(log) else 0.0,
        "gini": gini(exposure),
        "canary_share": float((log["served_by"] == "canary").mean()) if len(log) else 0.0,
    }
    if with_ci:
        out.update(bootstrap_ci(users))
    return out


def metrics_by(log: pd.DataFrame, keys: Sequence[str], catalogue_size: int) -> dict[tuple, dict[str, float]]:
    """`group_metrics` for every group of `keys` (e.g. ("surface", "arm"))."""
    return {
        (key if isinstance(key, tuple) else (key,)): group_metrics(rows, catalogue_size)
        for key, rows in log.groupby(list(keys), sort=True)
    }


@dataclass(frozen=True)
class Comparison:
    """Group B (e.g. the canary) against group A (the champion) on engagements per 1,000 served
    impressions, with a 95% bootstrap interval of the difference over users (B's and A's users
    resampled independently)."""

    metric: str
    a: float
    b: float
    difference: float
    ci95_low: float
    ci95_high: float
    users_a: int
    users_b: int
    # ln(b / a) and its standard error (independent groups, each a ratio of sums over its users)
    log_ratio: float = float("nan")
    log_ratio_se: float = float("nan")
    impressions_a: int = 0
    impressions_b: int = 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def log_rate_se(engaged: np.ndarray, impressions: np.ndarray) -> float:
    """Standard error of ln(sum(engaged) / sum(impressions)) over users (one entry each): the
    delta method on a ratio of sums, sqrt(sum((y_i - r n_i)^2) * n / (n - 1)) / sum(y); inf with
    fewer than two users or no engagement (nothing can be said about the rate's scale)."""
    y, n = np.asarray(engaged, dtype=np.float64), np.asarray(impressions, dtype=np.float64)
    if y.shape[0] < 2 or y.sum() <= 0 or n.sum() <= 0:
        return float("inf")
    r = y.sum() / n.sum()
    spread = float(np.sum((y - r * n) ** 2)) * y.shape[0] / (y.shape[0] - 1)
    return float(np.sqrt(spread) / y.sum())


def compare_groups(
    a: pd.DataFrame,
    b: pd.DataFrame,
    outcomes: Iterable[str] = ("click", "save"),
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> Comparison:
    """B minus A on `outcomes` (summed) per 1,000 served impressions, with its 95% interval, and
    ln(B / A) with its standard error."""
    outcomes = list(outcomes)
    name = "+".join(outcomes) + "_per_1k"
    ua, ub = per_user(a), per_user(b)
    se = {
        side: log_rate_se(u[outcomes].sum(axis=1).to_numpy(), u["impressions"].to_numpy())
        for side, u in (("a", ua), ("b", ub))
    }
    ratio = {
        "log_ratio_se": float(np.hypot(se["a"], se["b"])),
        "impressions_a": int(ua["impressions"].sum()),
        "impressions_b": int(ub["impressions"].sum()),
    }

    def rate(users: pd.DataFrame, idx: np.ndarray | None = None) -> np.ndarray | float:
        eng = users[outcomes].sum(axis=1).to_numpy(dtype=np.float64)
        imp = users["impressions"].to_numpy(dtype=np.float64)
        if idx is None:
            return 1000.0 * eng.sum() / imp.sum() if imp.sum() else float("nan")
        return 1000.0 * eng[idx].sum(axis=1) / np.maximum(imp[idx].sum(axis=1), 1.0)

    ra, rb = rate(ua), rate(ub)
    ratio["log_ratio"] = float(np.log(rb / ra)) if ra > 0 and rb > 0 else float("nan")
    if len(ua) < 2 or len(ub) < 2:
        return Comparison(
            name, float(ra), float(rb), float(rb - ra), float("nan"), float("nan"), len(ua), len(ub), **ratio
        )
    rng = np.random.default_rng(seed)
    diff = rate(ub, rng.integers(0, len(ub), (samples, len(ub)))) - rate(
        ua, rng.integers(0, len(ua), (samples, len(ua)))
    )
    low, high = np.percentile(diff, [2.5, 97.5])
    return Comparison(name, float(ra), float(rb), float(rb - ra), float(low), float(high), len(ua), len(ub), **ratio)
