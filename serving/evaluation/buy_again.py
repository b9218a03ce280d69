"""The "buy again" baseline, for a log whose items are engaged again (a vocabulary with
`repeats: true`, e.g. groceries): per user, the items the user engaged with most in a history
window (the most recent first among equals, then the smaller item id), then the window's most
engaged items to fill the list (ties: the smaller item id). Nothing the user engaged with is left
out: repeats are what this policy serves.

`evaluate_buy_again` measures its lists on the canary's protocol (recall@k per engaged outcome
on the evaluation day's users, `serving.evaluation.canary`); `buy_again_lister` gives the same
lists to the yardstick's replay (`serving.evaluation.replay`).
`baseline_figures` and `baseline_listers` give the canary its baselines: popularity, and buy
again where the vocabulary allows repeats (not otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from serving.evaluation.canary import _futures, _recall_figures, evaluate_popularity
from serving.evaluation.replay import Lister, popularity_lister
from serving.service.encoder import UserSequence

BUY_AGAIN = "buy_again"  # the baseline's role name in the canary's figures and the summary


def _engagements(history: pd.DataFrame, engaged: Sequence[str]) -> pd.DataFrame:
    return history.loc[history["outcome"].isin(list(engaged)), ["user_id", "item_id", "event_ts"]]


def _user_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (user, item): engagements and the last one's time (microseconds)."""
    ts = rows["event_ts"].astype("int64") if len(rows) else pd.Series([], dtype="int64")
    return (
        rows.assign(ts=ts)
        .groupby(["user_id", "item_id"], sort=False)
        .agg(count=("ts", "size"), last=("ts", "max"))
        .reset_index()
    )


def buy_again_lists(history: pd.DataFrame, users: Sequence[int], k: int, engaged: Sequence[str]) -> list[list[int]]:
    """Each user's top `k`: the user's items of `history` by engagements (then the latest, then
    the smaller id), then the most engaged items of `history` the list lacks."""
    rows = _engagements(history, engaged)
    counts = rows["item_id"].value_counts()
    popular = [int(i) for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    per_user = _user_counts(rows).sort_values(["user_id", "count", "last", "item_id"], ascending=[1, 0, 0, 1])
    own = {int(u): g["item_id"].astype(int).tolist() for u, g in per_user.groupby("user_id", sort=False)}
    out = []
    for user in users:
        top = own.get(int(user), [])[:k]
        listed = set(top)
        for item in popular:
            if len(top) == k:
                break
            if item not in listed:
                top.append(item)
        out.append(top)
    return out


def evaluate_buy_again(
    history: pd.DataFrame,
    day_events: pd.DataFrame,
    *,
    k: int = 100,
    outcomes: Sequence[str] = ("click", "save"),
    engaged: Sequence[str] = ("click", "save"),
) -> dict[str, float]:
    """The baseline on the same users, day and figures as `canary.evaluate_popularity`, its lists
    from `history` (the training window)."""
    users, future, future_by_outcome = _futures(day_events, engaged, outcomes)
    lists = buy_again_lists(history, users, k, engaged)
    n_items = max(int(history["item_id"].nunique()), 1)
    return {**_recall_figures(lists, future, future_by_outcome, k, n_items), "users": float(len(users))}


def buy_again_lister(history: pd.DataFrame, positive: Sequence[str]) -> Lister:
    """Buy again listed for the yardstick's replay (`serving.evaluation.replay`): `buy_again_lists`
    (it has no query)."""

    def lister(users: Sequence[int], surface: str, k: int, queries: Sequence[int | None]) -> list[list[int]]:
        return buy_again_lists(history, users, k, positive)

    return lister


def baseline_figures(
    history: pd.DataFrame,
    sequences: Mapping[int, UserSequence],
    day_events: pd.DataFrame,
    *,
    repeats: bool,
    k: int = 100,
    outcomes: Sequence[str] = ("click", "save"),
    engaged: Sequence[str] = ("click", "save"),
) -> dict[str, dict[str, float]]:
    """The canary's baselines on the day's users: popularity, and buy again when `repeats`."""
    figures = {
        "popularity": evaluate_popularity(history, sequences, day_events, k=k, outcomes=outcomes, engaged=engaged)
    }
    if repeats:
        figures[BUY_AGAIN] = evaluate_buy_again(history, day_events, k=k, outcomes=outcomes, engaged=engaged)
    return figures


def baseline_listers(
    history: pd.DataFrame, sequences: Mapping[int, UserSequence], positive: Sequence[str], *, repeats: bool
) -> dict[str, Lister]:
    """The yardstick's baselines: popularity, and buy again when `repeats`."""
    listers = {"popularity": popularity_lister(history, sequences, positive, repeats=repeats)}
    if repeats:
        listers[BUY_AGAIN] = buy_again_lister(history, positive)
    return listers
