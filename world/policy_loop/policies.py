"""The policies the harness compares: what each serves, and how each scores (user, item) pairs.

Every policy has the same two faces:

* ``recommend(requests, view) -> list[Served]``: the closed loop's `Recommender` for one batch
  window, given the `LoopView` (the policy's own log so far: users' sequences, the day, the
  fatigue history; a policy never sees another policy's log);
* ``score(users, items_per_user, surface, view) -> list[np.ndarray]``: a score per (user, item)
  for the offline yardstick (`serving.evaluation.yardstick`), higher = serve first.

Model policies go through the serving path: `LoadedVersion.retrieve_batch` (what /v1/retrieve
runs) or `LoadedVersion.recommend_batch` (/v1/recommend, the ranking head); their scores are
`LoadedVersion.score_items`'s combined score. Non-model policies learn from the log only,
except `OraclePolicy`, the one place the world's true engagement probabilities are read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from events.contract import BUILTIN_CODES, SURFACES
from feature_pipeline.tables import shown_since_us
from serving.evaluation.yardstick import version_scores
from serving.service import encoder as enc
from serving.service.retriever import LoadedVersion, RecommendRequest, RetrievalRequest
from world.closed_loop import ClosedLoopWorld, FatigueHistory, Served, SessionRequest
from world.experiments import random_items

ENGAGED = ("click", "save")  # what a policy tries to win (hide is a loss)
SEQUENCE_KEEP = 400  # events kept per user (the model window is shorter; seen items need more)


def stable_seed(*parts: object) -> int:
    """A seed from `parts` that does not depend on the process (blake2b, not hash())."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class SequenceStore:
    """Each user's non-impression events (engagements and negatives) as `UserSequence` arrays,
    oldest first, and the items shown to the user in the last `SHOWN_DAYS` days: what the online
    feature store holds (`UserSequence.from_features`: seq_* and seq_shown_item_ids)."""

    def __init__(self) -> None:
        self.by_user: dict[int, enc.UserSequence] = {}
        self.shown: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # user -> (items, times in us)
        self.since_us = 0  # the freshness window of the day after the newest update starts here

    def copy(self) -> SequenceStore:
        out = SequenceStore()
        out.by_user = dict(self.by_user)  # sequences are replaced, never modified in place
        out.shown, out.since_us = dict(self.shown), self.since_us
        return out

    def update(self, events: pd.DataFrame) -> None:
        """Append contract rows (any order): engagements and negatives to the sequences,
        impressions to the items shown lately (older than the next day's window dropped)."""
        if len(events) == 0:
            return
        ev = events.sort_values(["user_id", "event_ts"], kind="stable")
        users = ev["user_id"].to_numpy(np.int64)
        cols = _coded(ev)
        impression = cols[1] == _IMPRESSION_CODE
        next_day = (pd.Timestamp(int(cols[3].max()), unit="us", tz="UTC") + pd.Timedelta(days=1)).date()
        self.since_us = max(self.since_us, shown_since_us(next_day))
        bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:]):
            user, rows = int(users[a]), np.arange(a, b)
            engaged, shown = rows[~impression[a:b]], rows[impression[a:b]]
            if len(engaged):
                old = self.by_user.get(user, enc.UserSequence.empty())
                self.by_user[user] = enc.UserSequence(
                    *(np.concatenate([o, c[engaged]])[-SEQUENCE_KEEP:] for o, c in zip(_fields(old), cols))
                )
            items, ts = self.shown.get(user, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
            items, ts = np.concatenate([items, cols[0][shown]]), np.concatenate([ts, cols[3][shown]])
            keep = ts >= self.since_us
            self.shown[user] = (items[keep], ts[keep])

    def get(self, user: int, recent: pd.DataFrame | None = None) -> enc.UserSequence:
        """The user's sequence and items shown lately, plus `recent` (a request's events of today)."""
        seq = self.by_user.get(int(user), enc.UserSequence.empty())
        shown = self.shown.get(int(user), (np.zeros(0, np.int64),))[0]
        if recent is not None and len(recent):
            cols = _coded(recent)
            keep = cols[1] != _IMPRESSION_CODE
            shown = np.concatenate([shown, cols[0][~keep]])
            if keep.any():
                seq = enc.UserSequence(*(np.concatenate([o, c[keep]]) for o, c in zip(_fields(seq), cols)))
        return replace(seq, shown_item_ids=np.unique(shown)) if len(shown) else seq


_IMPRESSION_CODE = BUILTIN_CODES.outcome_code["impression"]


def _fields(seq: enc.UserSequence) -> tuple[np.ndarray, ...]:
    return seq.item_ids, seq.outcomes, seq.surfaces, seq.timestamps_us


def _coded(ev: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Contract rows as the sequence's int64 columns (names coded; an unknown name is -1)."""
    oc, sc = BUILTIN_CODES.outcome_code, BUILTIN_CODES.surface_code
    ts = ev["event_ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = pd.to_datetime(ts, utc=True)
    return (
        ev["item_id"].to_numpy(np.int64),
        np.fromiter((oc.get(o, -1) for o in ev["outcome"].to_numpy()), np.int64, len(ev)),
        np.fromiter((sc.get(x, -1) for x in ev["surface"].to_numpy()), np.int64, len(ev)),
        ts.to_numpy("datetime64[us]").astype(np.int64),
    )


@dataclass
class LoopView:
    """What a policy may read while it serves: its own log so far (never another policy's)."""

    world: ClosedLoopWorld
    day: dt.date
    sequences: SequenceStore
    history: FatigueHistory
    events: list[pd.DataFrame] = field(default_factory=list)  # the policy's log, one frame per day

    @property
    def n_items(self) -> int:
        return self.world.world.config.n_items


def _top_unseen(scores: np.ndarray, seen: np.ndarray, k: int) -> list[int]:
    s = np.array(scores, dtype=np.float64, copy=True)
    seen = seen[(seen >= 0) & (seen < s.shape[0])]
    s[seen] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    if k <= 0:
        return []
    top = np.argpartition(-s, k - 1)[:k]
    return [int(t) for t in top[np.argsort(-s[top], kind="stable")]]


def _by_surface(requests: Sequence[SessionRequest]) -> dict[str, list[int]]:
    """The requests' positions per surface (a version serves one surface)."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        out.setdefault(r.surface, []).append(i)
    return out


class Policy:
    """Base: `name`, `recommend` and `score` (module docstring); `start_day` refreshes state."""

    name = "policy"

    def start_day(self, view: LoopView) -> None:  # noqa: B027 - optional hook
        """Called before each served day (and before scoring) with the policy's own log."""

    def recommend(self, requests: list[SessionRequest], view: LoopView) -> list[Served]:
        out = []
        for r in requests:
            seq = view.sequences.get(r.user_id, r.recent_events)
            scores = self.score([r.user_id], [np.arange(view.n_items)], r.surface, view, [seq])[0]
            out.append(Served(_top_unseen(scores, seq.item_ids, r.k), self.name, self.name, self.name))
        return out

    def score(
        self,
        users: Sequence[int],
        items: Sequence[np.ndarray],
        surface: str,
        view: LoopView,
        sequences: Sequence[enc.UserSequence] | None = None,
    ) -> list[np.ndarray]:
        raise NotImplementedError


class RandomPolicy(Policy):
    """A uniformly random list per session; the draws depend only on (seed, session id)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def recommend(self, requests: list[SessionRequest], view: LoopView) -> list[Served]:
        out = []
        for r in requests:
            rng = np.random.default_rng(stable_seed("random-policy", self.seed, r.session_id))
            seen = view.sequences.get(r.user_id, r.recent_events).item_ids
            items = random_items(rng, view.n_items, r.k, seen.tolist(), spare=20)
            out.append(Served(items, self.name, self.name, self.name))
        return out

    def score(self, users, items, surface, view, sequences=None):
        return [
            np.random.default_rng(stable_seed("random-score", self.seed, u)).random(len(its))
            for u, its in zip(users, items)
        ]


class PopularityPolicy(Policy):
    """The items clicked or saved most over the policy's own last `days` days (all users)."""

    name = "popularity"

    def __init__(self, days: int = 7) -> None:
        self.days = days
        self.counts = np.zeros(0)

    def start_day(self, view: LoopView) -> None:
        recent = pd.concat(view.events[-self.days :], ignore_index=True) if view.events else None
        counts = np.zeros(view.n_items)
        if recent is not None and len(recent):
            items = recent.loc[recent["outcome"].isin(ENGAGED), "item_id"].to_numpy(np.int64)
            counts = np.bincount(items, minlength=view.n_items).astype(np.float64)
        self.counts = counts - np.arange(view.n_items) * 1e-9  # ties: the smaller item id first

    def score(self, users, items, surface, view, sequences=None):
        return [self.counts[np.asarray(its, np.int64)] for its in items]


class OraclePolicy(Policy):
    """The world's true P(click) + P(save) as of the day's start (fatigue included): the ceiling,
    and the only policy that reads the world's parameters."""

    name = "oracle"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {"click": 1.0, "save": 1.0})
        self._cache: dict[tuple, np.ndarray] = {}

    def start_day(self, view: LoopView) -> None:
        self._cache = {}

    def _truth(self, users: np.ndarray, surface: str, view: LoopView) -> np.ndarray:
        probs = view.world.expected_engagement(users, surface, view.day, view.history)
        return sum(float(w) * probs[o] for o, w in self.weights.items())

    def recommend(self, requests: list[SessionRequest], view: LoopView) -> list[Served]:
        out: list[Served | None] = [None] * len(requests)
        for surface, idx in _by_surface(requests).items():
            users, rows = np.unique([requests[i].user_id for i in idx], return_inverse=True)
            truth = self._truth(users, surface, view)
            for row, i in zip(rows, idx):
                r = requests[i]
                seen = view.sequences.get(r.user_id, r.recent_events).item_ids
                out[i] = Served(_top_unseen(truth[row], seen, r.k), self.name, self.name, self.name)
        return out  # type: ignore[return-value]

    def score(self, users, items, surface, view, sequences=None):
        truth = self._truth(np.asarray(users, np.int64), surface, view)
        return [truth[j][np.asarray(its, np.int64)] for j, its in enumerate(items)]


class ModelPolicy(Policy):
    """A trained model per surface, served through `LoadedVersion` as the service serves it:
    ``retrieve_batch`` (/v1/retrieve) or, with ``endpoint="/v1/recommend"``, ``recommend_batch``
    (retrieve `n_candidates`, rank with the ranking head)."""

    def __init__(
        self,
        name: str,
        versions: Mapping[str, LoadedVersion],
        outcome_weights: Mapping[str, float] | None = None,
        endpoint: str = "/v1/retrieve",
        n_candidates: int = 200,
    ) -> None:
        missing = set(SURFACES) - set(versions)
        if missing:
            raise ValueError(f"{name}: no version for surfaces {sorted(missing)}")
        if endpoint not in ("/v1/retrieve", "/v1/recommend"):
            raise ValueError(f"{name}: endpoint must be /v1/retrieve or /v1/recommend, got {endpoint!r}")
        self.name = name
        self.versions = dict(versions)
        self.weights = dict(outcome_weights) if outcome_weights else None
        self.endpoint = endpoint
        self.n_candidates = n_candidates

    def recommend(self, requests: list[SessionRequest], view: LoopView) -> list[Served]:
        out: list[Served | None] = [None] * len(requests)
        for surface, idx in _by_surface(requests).items():
            version = self.versions[surface]
            seqs = [view.sequences.get(requests[i].user_id, requests[i].recent_events) for i in idx]
            if self.endpoint == "/v1/recommend":
                asked = [
                    RecommendRequest(s, requests[i].k, self.weights, query_id=requests[i].query_id)
                    for s, i in zip(seqs, idx)
                ]
                lists = [[x.item for x in res.items] for res in version.recommend_batch(asked, None, self.n_candidates)]
            else:
                asked = [
                    RetrievalRequest(s, requests[i].k, self.weights, query_id=requests[i].query_id)
                    for s, i in zip(seqs, idx)
                ]
                lists = [[c.item for c in res.candidates] for res in version.retrieve_batch(asked)]
            for i, items in zip(idx, lists):
                out[i] = Served(items, version.version, self.name, self.name)
        return out  # type: ignore[return-value]

    def score(self, users, items, surface, view, sequences=None):
        seqs = sequences if sequences is not None else [view.sequences.get(u) for u in users]
        ranked = self.endpoint == "/v1/recommend"
        return version_scores(self.versions[surface], seqs, items, self.weights, ranked)


class HiddenItemsPolicy(Policy):
    """A deliberately bad policy (for checking the yardstick): the items the user hid first,
    then the items hidden most by everyone."""

    name = "hidden"

    def start_day(self, view: LoopView) -> None:
        log = pd.concat(view.events, ignore_index=True)
        hid = log[log["outcome"] == "hide"]
        self.by_user = {int(u): g.groupby("item_id").size() for u, g in hid.groupby("user_id")}
        self.overall = np.bincount(hid["item_id"].to_numpy(np.int64), minlength=view.n_items).astype(np.float64)

    def recommend(self, requests: list[SessionRequest], view: LoopView) -> list[Served]:
        out = []
        for r in requests:
            s = self.score([r.user_id], [np.arange(view.n_items)], r.surface, view)[0]
            top = np.argsort(-s, kind="stable")[: r.k]
            out.append(Served([int(i) for i in top], self.name, self.name, self.name))
        return out

    def score(self, users, items, surface, view, sequences=None):
        out = []
        for u, its in zip(users, items):
            its = np.asarray(its, np.int64)
            mine = self.by_user.get(int(u))
            own = np.zeros(len(its)) if mine is None else mine.reindex(its).fillna(0.0).to_numpy(np.float64)
            out.append(1000.0 * own + self.overall[its])
        return out
