"""Replay: judge a policy by what users did with the logged impressions of items it would serve.

A policy is asked, through the path that serves it, for each (user, surface, query)'s top k list
as of the held-out days' start (seen items left out, as serving leaves them out; the query of a
search session, none elsewhere). Every logged impression of the held-out days whose item is in the
list of its user, surface and query is a *replayed* impression:
a slot where the log showed what the policy would have shown. The replay figures are the
engagement (click or save) rate of the replayed impressions, so a policy is judged on its own
lists, not on how it orders the logging policy's (the impression AUCs of
`serving.evaluation.yardstick`), and on what users did when shown an item, not on what the log
happened to show (recall of next engagements).

This is the replay estimator (Li et al., 2011) taken over every logged impression rather than only
the uniformly random share: the exploration share of a few percent holds too few engagements to
tell policies apart (in the paired harness, 274 engagements on 12,307 exploration slots over ten
days; fewer than three per policy in a top 50), while every impression gives about ten times more.
The price is the logging policy's selection: an item the log shows over and over is replayed many
times with the engagement rate of a tired item. Variants measure that (all but the pooled one
per surface, averaged as ``replay@k``):

* ``replay@k``: the engagement rate of the impressions replayed by the top k, per surface, then
  averaged with each surface's share of the logged impressions (fixed for every policy: pooled,
  a policy whose lists reach more of one surface's impressions would be judged on that surface's
  rate, e.g. a model that uses the search query on search's, which is twice homefeed's); the
  yardstick at ``k = YARDSTICK_K``; SE by the delta method over users within a surface;
* ``replay_pooled@k``: the same rate pooled over surfaces;
* ``replay_first@k``: only each (user, item)'s first impression of the held-out days;
* ``replay_lift@k``: replayed engagements over what each impression's user engages on average
  (a policy whose lists happen to match the impressions of more active users gains nothing);
* ``replay_ips@k``: every replayed impression weighted by 1 / (sessions that showed its item);
* ``replay_position@k``: replayed engagements over the engagements expected where each replayed
  impression was shown: the log's own engagement rate at that surface and position (an organic
  impression, position -1, is its own stratum). Position bias under the examination hypothesis:
  a slot low in the feed is seldom looked at, an organic one was sought out (in the paired
  harness's log: organic 0.093, position 0 0.025, position 10 0.012), so a plain replay prefers a
  policy whose lists happen to match organic impressions over one whose lists match the feed's
  lower slots. 1.0: engages as the log's own slots at the same places do. A log without positions
  (no serving log) is one stratum per surface: the per-surface replay over its surface's rate.

Listers: ``lister(users, surface, k, queries) -> one list of item ids per (user, query)``
(``queries[i]``: the search query of ``users[i]``'s list, None without one). `version_lister` asks
a published version as /v1/retrieve answers; `popularity_lister` and `random_lister` are the
gate's baselines listed the same way (they ignore the query).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from serving.service.encoder import UserSequence
from serving.service.retriever import LoadedVersion, RetrievalRequest

Lister = Callable[[Sequence[int], str, int, Sequence[int | None]], list[list[int]]]
Key = tuple[int, str, int | None]  # (user, surface, query or None)
Lists = Mapping[Key, Sequence[int]]


def _queries(impressions: pd.DataFrame) -> list[int | None]:
    if "query_id" not in impressions:
        return [None] * len(impressions)
    return [None if q != q or q is None or q < 0 else int(q) for q in impressions["query_id"].tolist()]


def _keys(impressions: pd.DataFrame) -> list[Key]:
    users = impressions["user_id"].astype(int).tolist()
    surfaces = impressions["surface"].astype(str).tolist()
    return list(zip(users, surfaces, _queries(impressions)))


def policy_lists(lister: Lister, impressions: pd.DataFrame, k: int, batch: int = 256) -> dict[Key, list[int]]:
    """{(user, surface, query): top k} for every (user, surface, query) with a logged impression."""
    out: dict[Key, list[int]] = {}
    by_surface: dict[str, list[tuple[int, int | None]]] = {}
    for user, surface, query in sorted(
        set(_keys(impressions)), key=lambda t: (t[1], t[0], t[2] is not None, t[2] or 0)
    ):
        by_surface.setdefault(surface, []).append((user, query))
    for surface, asked in by_surface.items():
        for a in range(0, len(asked), batch):
            part = asked[a : a + batch]
            lists = lister([u for u, _ in part], surface, k, [q for _, q in part])
            for (user, query), items in zip(part, lists):
                out[(user, surface, query)] = [int(i) for i in items]
    return out


def _ranks(lists: Lists, impressions: pd.DataFrame) -> np.ndarray:
    """Each impression's item's position in its (user, surface, query)'s list (-1: not in it)."""
    position = {key: {int(i): r for r, i in enumerate(items)} for key, items in lists.items()}
    items = impressions["item_id"].astype(int).tolist()
    return np.array([position.get(key, {}).get(i, -1) for key, i in zip(_keys(impressions), items)], np.int64)


def _ratio(users: np.ndarray, hit: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """sum(hit) / sum(weight) with its delta-method SE over users and the users counted."""
    frame = pd.DataFrame({"u": users, "h": hit, "w": weight}).groupby("u").sum()
    total = float(frame["w"].sum())
    if total <= 0:
        return {"value": float("nan"), "se": float("nan"), "n": 0.0}
    value = float(frame["h"].sum()) / total
    resid = frame["h"] - value * frame["w"]
    se = float(np.sqrt((resid**2).sum()) / total) if len(frame) > 1 else float("nan")
    return {"value": value, "se": se, "n": float(len(frame))}


def _by_surface(
    surfaces: np.ndarray, share: Mapping[str, float], users: np.ndarray, hit: np.ndarray, weight: np.ndarray
) -> dict[str, float]:
    """`_ratio` within each surface, averaged with the surfaces' fixed shares (a surface none of
    the policy's impressions reach drops out, the others' shares rescaled); SE from the surfaces'
    SEs taken as independent."""
    parts = []
    for surface, w in share.items():
        at = surfaces == surface
        r = _ratio(users[at], hit[at], weight[at])
        if r["value"] == r["value"]:
            parts.append((w, r))
    total = sum(w for w, _ in parts)
    if not parts or total <= 0:
        return {"value": float("nan"), "se": float("nan"), "n": 0.0}
    value = sum(w * r["value"] for w, r in parts) / total
    se = float(np.sqrt(sum((w / total) ** 2 * r["se"] ** 2 for w, r in parts)))
    return {"value": float(value), "se": se, "n": float(len(np.unique(users)))}


def replay_measures(lists: Lists, impressions: pd.DataFrame, ks: Sequence[int] = (50, 100, 200)) -> dict[str, dict]:
    """Every replay figure (module docstring) for the lists' prefixes of each k in `ks`:
    {name: {"value", "se", "n"}} (n: users with a replayed impression)."""
    rank = _ranks(lists, impressions)
    users = impressions["user_id"].to_numpy(np.int64)
    surfaces = impressions["surface"].astype(str).to_numpy()
    share = impressions["surface"].astype(str).value_counts(normalize=True).sort_index().to_dict()
    engaged = impressions["engaged"].to_numpy(np.float64)
    first = ~impressions.duplicated(["user_id", "item_id"]).to_numpy(bool)
    user_rate = impressions.groupby("user_id")["engaged"].transform("mean").to_numpy(np.float64)
    shown = impressions.groupby("item_id")["session_id"].transform("nunique").to_numpy(np.float64)
    expected = position_rates(impressions)
    out = {}
    for k in ks:
        hit = (rank >= 0) & (rank < k)
        u, s, y = users[hit], surfaces[hit], engaged[hit]
        ones = np.ones_like(y)
        out[f"replay@{k}"] = _by_surface(s, share, u, y, ones)
        out[f"replay_pooled@{k}"] = _ratio(u, y, ones)
        f = first[hit]
        out[f"replay_first@{k}"] = _by_surface(s[f], share, u[f], y[f], ones[f])
        out[f"replay_lift@{k}"] = _by_surface(s, share, u, y, user_rate[hit])
        w = 1.0 / shown[hit]
        out[f"replay_ips@{k}"] = _by_surface(s, share, u, y * w, w)
        out[f"replay_position@{k}"] = _by_surface(s, share, u, y, expected[hit])
    return out


def position_rates(impressions: pd.DataFrame) -> np.ndarray:
    """Each impression's expected engagement where it was shown: the engagement rate of the
    logged impressions of its surface and position (`replay_position@k`'s denominator)."""
    position = impressions["position"] if "position" in impressions else pd.Series(-1, index=impressions.index)
    keys = [impressions["surface"].astype(str), position.fillna(-1).astype(np.int64)]
    return impressions["engaged"].astype(np.float64).groupby(keys).transform("mean").to_numpy(np.float64)


def version_lister(
    versions: LoadedVersion | Mapping[str, LoadedVersion],
    sequences: Mapping[int, UserSequence],
    outcome_weights: Mapping[str, float] | None = None,
) -> Lister:
    """A version's lists (or one version per surface) as /v1/retrieve serves them, from the users'
    sequences as of the held-out days' start."""

    def lister(users: Sequence[int], surface: str, k: int, queries: Sequence[int | None]) -> list[list[int]]:
        version = versions if isinstance(versions, LoadedVersion) else versions[surface]
        asked = [
            RetrievalRequest(sequences.get(int(u), UserSequence.empty()), k, outcome_weights, query_id=q)
            for u, q in zip(users, queries)
        ]
        return [[c.item for c in res.candidates] for res in version.retrieve_batch(asked)]

    return lister


def _top_unseen(ranked: Sequence[int], seen: set[int], k: int) -> list[int]:
    out = []
    for item in ranked:
        if item not in seen:
            out.append(int(item))
            if len(out) == k:
                break
    return out


def _seen(sequences: Mapping[int, UserSequence], user: int, repeats: bool) -> set[int]:
    """What serving leaves out of `user`'s lists: nothing when the vocabulary allows repeats."""
    return set() if repeats else set(sequences.get(int(user), UserSequence.empty()).seen_items().tolist())


def popularity_lister(
    train_events: pd.DataFrame,
    sequences: Mapping[int, UserSequence],
    positive: Sequence[str],
    *,
    repeats: bool = False,
) -> Lister:
    """The popularity baseline's lists: the items engaged with most in `train_events` (ties: the
    smaller id), the user's seen items left out as serving leaves them out (unless `repeats`)."""
    counts = train_events.loc[train_events["outcome"].isin(list(positive)), "item_id"].value_counts()
    ranked = [int(i) for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def lister(users: Sequence[int], surface: str, k: int, queries: Sequence[int | None]) -> list[list[int]]:
        return [_top_unseen(ranked, _seen(sequences, u, repeats), k) for u in users]

    return lister


def random_lister(
    item_ids: Sequence[int], sequences: Mapping[int, UserSequence], seed: int = 0, *, repeats: bool = False
) -> Lister:
    """The random policy's lists: k unseen items drawn uniformly (seeded by the user and surface,
    so a re-run agrees)."""
    items = np.asarray(sorted(set(int(i) for i in item_ids)), np.int64)

    def lister(users: Sequence[int], surface: str, k: int, queries: Sequence[int | None]) -> list[list[int]]:
        out = []
        for u in users:
            rng = np.random.default_rng([seed, int(u), sum(map(ord, surface))])
            out.append(_top_unseen(rng.permutation(items).tolist(), _seen(sequences, u, repeats), k))
        return out

    return lister
