"""The offline yardstick and the candidate measures it was chosen among.

Everything here reads logs only (events, the serving log); nothing reads the simulated world.
The yardstick itself judges a policy's own lists (`serving.evaluation.replay`); the impression
measures judge a policy through a **scorer**: ``score(users, items_per_user, surface) -> list of
score arrays`` (higher = serve first), batched; `version_scores` scores a published version's
items as serving orders them (retrieval score, what /v1/retrieve ranks by; ``ranked=True``: the
ranking head, /v1/recommend).

`logged_impressions(events, serving_log)`: one row per logged impression of the held-out days
(user, session, surface, item, whether it got a click or save, and from the serving log its
position and propensity: organic impressions have position -1 and propensity 1; the search
query, -1 without one).

Candidate measures (`candidate_measures`), each a mean with its standard error:

* ``user_auc``: per user, the AUC of the score separating the impressions the user clicked or
  saved from the ones the user did not, over all the user's logged impressions of the held-out
  days; mean over users with both (SE over users). It ranked the earlier recipe's policies as
  users did (Spearman 0.91 / 0.96), not the current recipe's (0.08 / 0.37): a policy is served on
  its own lists, and how it orders the logging policy's impressions says little about them.
* ``session_auc``: the same per session (the canary's ``slate_auc``), mean over sessions.
* ``top_auc``: per user, over served slots at positions < 3 only (nearly always examined:
  position-debiased by selection).
* ``explore_auc``: pooled AUC over the exploration slots (propensity < 1: uniformly random items,
  so exposure does not favour any policy) of each score's rank among the same user's logged
  impressions (a model's scale differs from user to user); SE by bootstrap over users.
* ``recall@k`` of next engagements (`recall_at_k`): what the canary gate used; here only for
  comparison.
* inverse-propensity recall (`ips_recall_at_k`): recall of a policy's own top k with every
  engagement weighted by 1 / (sessions that showed its item): judges the policy's own list, not
  the logging policy's, with the exposure of the log divided out.

**The yardstick** (`YARDSTICK`) is ``replay@100`` (`serving.evaluation.replay`): the engagement
rate of the held-out impressions whose item is in the policy's own top 100 for that user and
surface. `yardstick(lists, impressions)` is what the gate calls: ``{"measure", "value", "se",
"users"}``; docs/yardstick.md has every candidate's agreement with what users did.

**Ranking policies over many days** (`RANKING_YARDSTICK`, ``replay_position@100``): the same
replay with each replayed impression's engagement taken over what the log's own slots at its
surface and position engage (`serving.evaluation.replay.position_rates`). Over the paired
harness's ten held-out days it orders policies as users did (Spearman 0.88 with served saves, 0.85
with clicks, where ``replay@100`` has 0.60 / 0.97: a plain replay prefers lists that match the
log's organic impressions, which users sought out, over lists that match the feed's low slots).
It is what `benchmarks/policy_loop.py` and `benchmarks/ablations_sim.py` rank by. The gate keeps
``replay@100``: on one canary day the position-corrected figure's standard error (0.2-0.6 on
values near 1) is larger than the gap between a trained model and the popularity or random
baseline, while ``replay@100`` separates them every day (docs/yardstick.md has the numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from serving.evaluation.replay import replay_measures
from serving.service.encoder import UserSequence
from serving.service.retriever import LoadedVersion, RecommendRequest

Scorer = Callable[[Sequence[int], Sequence[np.ndarray], str], list[np.ndarray]]
POSITIVE = ("click", "save")
YARDSTICK = "replay@100"
YARDSTICK_K = 100  # the list size the yardstick replays (the canary's k)
RANKING_YARDSTICK = "replay_position@100"  # policies compared over many days (module docstring)
TOP_POSITIONS = 3
IMPRESSION_COLUMNS = ("user_id", "session_id", "surface", "item_id", "engaged", "position", "propensity", "query_id")


def logged_impressions(
    events: pd.DataFrame,
    serving_log: pd.DataFrame | None = None,
    impression: str = "impression",
    positive: Sequence[str] = POSITIVE,
) -> pd.DataFrame:
    """The held-out days' impressions with their labels, positions and propensities (docstring)."""
    missing = {"user_id", "session_id", "surface", "item_id", "outcome"} - set(events.columns)
    if missing:
        raise ValueError(f"logged_impressions: events lack columns {sorted(missing)}")
    keys = ["session_id", "item_id"]
    imp = events.loc[events["outcome"] == impression, ["user_id", "session_id", "surface", "item_id"]]
    query = events.loc[imp.index, "query_id"] if "query_id" in events else pd.Series(np.nan, index=imp.index)
    imp = imp.assign(query_id=pd.to_numeric(query, errors="coerce").fillna(-1).astype(np.int64))
    imp = imp.drop_duplicates(keys)
    pos = events.loc[events["outcome"].isin(list(positive)), keys].drop_duplicates()
    out = imp.merge(pos.assign(engaged=True), on=keys, how="left")
    out["engaged"] = out["engaged"].astype("boolean").fillna(False).astype(bool)
    if serving_log is not None and len(serving_log):
        log = serving_log[keys + ["position"] + (["propensity"] if "propensity" in serving_log else [])]
        out = out.merge(log.drop_duplicates(keys), on=keys, how="left")
    if "position" not in out:
        out["position"] = np.nan
    if "propensity" not in out:
        out["propensity"] = np.nan
    out["position"] = out["position"].fillna(-1).astype(np.int64)
    out["propensity"] = out["propensity"].fillna(1.0).astype(np.float64)
    return out[list(IMPRESSION_COLUMNS)].reset_index(drop=True)


def score_impressions(score: Scorer, impressions: pd.DataFrame, batch: int = 256) -> np.ndarray:
    """The scorer's score of every impression row (one call per surface and batch of users)."""
    out = np.full(len(impressions), np.nan)
    for surface, rows in impressions.groupby("surface", sort=True).indices.items():
        users = impressions["user_id"].to_numpy(np.int64)[rows]
        items = impressions["item_id"].to_numpy(np.int64)[rows]
        order = np.argsort(users, kind="stable")
        rows, users, items = rows[order], users[order], items[order]
        bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
        groups = list(zip(bounds[:-1], bounds[1:]))
        for g in range(0, len(groups), batch):
            part = groups[g : g + batch]
            lists = [np.unique(items[a:b]) for a, b in part]
            scores = score([int(users[a]) for a, _ in part], lists, str(surface))
            for (a, b), its, s in zip(part, lists, scores):
                s = np.asarray(s, np.float64)
                if s.shape != its.shape:
                    raise ValueError(f"the scorer returned {s.shape} scores for {its.shape} items")
                out[rows[a:b]] = s[np.searchsorted(its, items[a:b])]
    return out


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(a positive scores above a negative), ties half; NaN without both. -inf scores are the
    lowest (an item a model does not know)."""
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    s = np.where(np.isfinite(scores), scores, -1e300)
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _grouped_auc(keys: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, int]:
    """Mean over groups of the within-group AUC, its SE, and how many groups have one."""
    order = np.argsort(keys, kind="stable")
    k, s, y = keys[order], scores[order], labels[order]
    bounds = np.flatnonzero(np.r_[True, k[1:] != k[:-1], True])
    values = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if 0 < y[a:b].sum() < b - a:
            values.append(_auc(s[a:b], y[a:b]))
    if not values:
        return float("nan"), float("nan"), 0
    v = np.array(values)
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se, len(v)


def _pooled_auc(
    users: np.ndarray, scores: np.ndarray, labels: np.ndarray, draws: int = 200
) -> tuple[float, float, int]:
    value = _auc(scores, labels)
    uniq, inverse = np.unique(users, return_inverse=True)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(draws):
        mult = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))[inverse]
        rows = np.repeat(np.arange(len(scores)), mult)
        boot.append(_auc(scores[rows], labels[rows]))
    b = np.array([x for x in boot if x == x])
    return value, float(b.std(ddof=1)) if len(b) > 1 else float("nan"), int(labels.sum())


def _within_user(users: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each score as its rank among the same user's scored rows, in [0, 1] (ties: mean rank):
    scores of different users become comparable (a model's scale differs from user to user)."""
    s = np.where(np.isfinite(scores), scores, -1e300)
    frame = pd.DataFrame({"u": users, "s": s})
    ranks = frame.groupby("u")["s"].rank(method="average").to_numpy()
    counts = frame.groupby("u")["s"].transform("size").to_numpy()
    return (ranks - 0.5) / counts


def candidate_measures(score: Scorer, impressions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Every impression-based candidate (module docstring): {name: {"value", "se", "n"}}."""
    s = score_impressions(score, impressions)
    y = impressions["engaged"].to_numpy(bool)
    user = impressions["user_id"].to_numpy(np.int64)
    pos = impressions["position"].to_numpy(np.int64)
    served_top = (pos >= 0) & (pos < TOP_POSITIONS)
    explore = impressions["propensity"].to_numpy(np.float64) < 1.0
    out = {}
    for name, (value, se, n) in {
        "user_auc": _grouped_auc(user, s, y),
        "session_auc": _grouped_auc(impressions["session_id"].to_numpy(np.int64), s, y),
        "top_auc": _grouped_auc(user[served_top], s[served_top], y[served_top]),
        "explore_auc": _pooled_auc(user[explore], _within_user(user, s)[explore], y[explore]),
    }.items():
        out[name] = {"value": value, "se": se, "n": float(n)}
    return out


def yardstick(lists: Mapping[tuple, Sequence[int]], impressions: pd.DataFrame) -> dict[str, float | str]:
    """The yardstick (`YARDSTICK`) of a policy's top `YARDSTICK_K` lists per (user, surface, query) on
    logged impressions (`serving.evaluation.replay`): measure, value, se, users."""
    measured = replay_measures(lists, impressions, (YARDSTICK_K,))[YARDSTICK]
    return {"measure": YARDSTICK, "value": measured["value"], "se": measured["se"], "users": measured["n"]}


def recall_at_k(lists: Mapping[int, Sequence[int]], future: pd.DataFrame, positive: Sequence[str] = POSITIVE) -> dict:
    """Mean over users with a future engagement of |list & engaged items| / |engaged items|
    (today's canary measure; `lists` holds each user's top k)."""
    fut = future[future["outcome"].isin(list(positive))]
    values = []
    for user, items in fut.groupby("user_id")["item_id"]:
        want = set(items.tolist())
        got = set(int(i) for i in lists.get(int(user), []))
        values.append(len(want & got) / len(want))
    v = np.array(values) if values else np.zeros(0)
    return {
        "value": float(v.mean()) if len(v) else float("nan"),
        "se": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"),
        "n": float(len(v)),
    }


def ips_recall_at_k(
    lists: Mapping[Any, Sequence[int]],
    future: pd.DataFrame,
    positive: Sequence[str] = POSITIVE,
    by_surface: bool = False,
) -> dict:
    """Recall of each user's top k with every future engagement weighted by the inverse of how
    many sessions of `future` showed its item (an inverse-propensity estimate from the log: an
    engagement with an item shown everywhere says less about a user's wants than one with an item
    shown rarely). `lists` is keyed by user, or with `by_surface` by (user, surface): each
    engagement is then looked for in its own surface's list. One value over all (user, item,
    outcome[, surface]) engagements; se from the users."""
    shown = future.drop_duplicates(["session_id", "item_id"])["item_id"].value_counts()
    keys = ["user_id", "item_id", "outcome"] + (["surface"] if by_surface else [])
    fut = future[future["outcome"].isin(list(positive))].drop_duplicates(keys)
    if fut.empty:
        return {"value": float("nan"), "se": float("nan"), "n": 0.0}
    weight = 1.0 / fut["item_id"].map(shown).fillna(1.0).clip(lower=1.0).to_numpy()
    top = {key: set(int(i) for i in items) for key, items in lists.items()}
    users, items = fut["user_id"].astype(int).tolist(), fut["item_id"].astype(int).tolist()
    where = list(zip(users, fut["surface"].astype(str).tolist())) if by_surface else users
    hit = np.array([i in top.get(w, ()) for w, i in zip(where, items)])
    per_user = pd.DataFrame({"u": users, "hit": hit * weight, "w": weight}).groupby("u").sum()
    value = float(per_user["hit"].sum() / per_user["w"].sum())
    n = len(per_user)
    # the ratio's standard error by the delta method over users
    resid = per_user["hit"] - value * per_user["w"]
    se = float(np.sqrt((resid**2).sum()) / per_user["w"].sum()) if n > 1 else float("nan")
    return {"value": value, "se": se, "n": float(n)}


def version_scores(
    version: LoadedVersion,
    sequences: Sequence[UserSequence],
    items: Sequence[np.ndarray],
    outcome_weights: Mapping[str, float] | None = None,
    ranked: bool = False,
) -> list[np.ndarray]:
    """Scores of each user's items, batched: the ranking head's combined score when `ranked`
    and the version has one (/v1/recommend with given candidates), else the retrieval score
    ``sum_o w_o max_offset <q_(o, offset), e_item>`` (the order /v1/retrieve serves). An item
    the version does not know scores -inf."""
    weights = dict(outcome_weights or version.default_outcome_weights)
    if ranked and version.encoder.ranks:
        reqs = [RecommendRequest(seq, len(its), weights, None, its.tolist()) for seq, its in zip(sequences, items)]
        out = []
        for its, res in zip(items, version.recommend_batch(reqs)):
            got = {r.item: r.score for r in res.items}
            out.append(np.array([got.get(int(i), -np.inf) for i in its], np.float64))
        return out
    encoder = version.encoder
    budget = encoder.budget(weights)
    h = encoder.encode_last([encoder.window(s) for s in sequences], [None] * len(sequences), keep_states=False)[0]
    queries, _ = encoder.queries_for(h, [budget] * len(sequences))
    out = []
    with torch.inference_mode():
        for b, its in enumerate(items):
            index = encoder.to_index(np.asarray(its, np.int64))
            e = version.model.item_embeddings(torch.from_numpy(np.maximum(index, 0))).numpy()
            q = queries[b * len(budget) : (b + 1) * len(budget)]
            s = q @ e.T  # (queries, items)
            total = np.zeros(len(its))
            for o in dict.fromkeys(o for o, _ in budget):
                rows = [j for j, (oo, _) in enumerate(budget) if oo == o]
                total += float(weights.get(o, 0.0)) * s[rows].max(0)
            out.append(np.where(index > 0, total, -np.inf))
    return out
