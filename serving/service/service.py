"""The request path behind the HTTP layer: micro-batches of retrievals and recommendations.

``RetrievalService.submit(pending, done)`` queues one validated request (``Pending``: the user,
k, outcome weights, recent events, and the version it was routed to) on a ``MicroBatcher``. The
worker thread serves a whole batch at once (``process``):

1. feature read: one online-store read for every user of the batch (``read_many`` when the
   reader has it, e.g. one Feast ``get_online_features`` call); a failure is counted and the
   batch is served from ``recent_events`` alone;
2. the sequences (features + ``recent_events``), grouped by the loaded version they were routed
   to; each group is one ``LoadedVersion.retrieve_batch`` (batched incremental encode with the
   users' ``EncoderState`` s, one head pass, one faiss search, a merge per request);
   a recommend request (``Pending.endpoint == "recommend"``) is served with the others of its
   version by ``LoadedVersion.recommend_batch`` (retrieval of ``recommend_candidates``, then the
   ranking head over the keys/values of the same encode);
3. per request: the JSON response body and its stage times in milliseconds: ``queue`` (arrival
   to the start of its batch), ``feature``, ``encode``, ``ann`` (the batch's), ``merge`` (its
   own), ``total`` (arrival to response built); with the batch size, how its user's encoder
   state was obtained (``serving.service.encoder_state.ENCODE_KINDS``) and its model FLOPs.

A version swap retires the replaced versions' encoder states (``VersionManager.on_swap``) and
freezes the garbage collector's view of what is loaded (``gc.freeze``): the model, the index and
the imported libraries are a few hundred thousand long-lived objects, and without the freeze
every full collection walks them all (150-400 ms pauses every second or two at 800 requests/s on
the 2-core machine; they showed as the c32 p99). Frozen objects are still freed by reference
counting (an old version goes when its last request ends); only reference cycles among them
stay. An
exception while serving a version's group is handed to that group's requests only (the HTTP
layer turns it into a 5xx); the other groups of the batch are served.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from serving.service.batcher import Job, MicroBatcher
from serving.service.encoder import UserSequence
from serving.service.encoder_state import EncoderStateCache
from serving.service.exploration import ExplorationConfig, explore
from serving.service.retriever import (
    DEFAULT_RECOMMEND_CANDIDATES,
    LoadedVersion,
    RecommendRequest,
    RecommendResult,
    RetrievalRequest,
    RetrievalResult,
)
from serving.service.versions import VersionManager

log = logging.getLogger("serving.service.service")

STAGES = ("queue", "feature", "encode", "ann", "rank", "merge")


class FeatureReader(Protocol):
    def read(self, user_id: int) -> Mapping[str, Any] | None:
        """The user's ``user_sequence`` feature lists, or None for an unknown user."""


@dataclass
class ServingConfig:
    max_wait_ms: float = 2.0  # longest a request is held back to gather a batch
    max_batch: int = 64  # requests per batch at most
    encoder_cache_mb: float = 256.0  # per-user encoder states (keys/values); 0 = off
    recommend_candidates: int = DEFAULT_RECOMMEND_CANDIDATES  # retrieved, then ranked, per /v1/recommend
    # a share of each surface's served slots filled with uniformly random catalogue items, each
    # answer's slot with its propensity (serving.service.exploration); off unless set
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    exploration_seed: int = 0


@dataclass
class Pending:
    """One validated retrieve (or recommend) request, routed to a loaded version."""

    user_id: int
    surface: str
    k: int
    outcome_weights: Mapping[str, float] | None
    recent_events: list[dict[str, Any]] | None
    loaded: LoadedVersion
    role: str  # champion or canary
    received: float = field(default_factory=time.perf_counter)
    endpoint: str = "retrieve"  # or "recommend"
    candidates: list[int] | None = None  # recommend: the client's own candidates
    query_id: int | None = None  # a search request's query


@dataclass
class Served:
    body: bytes
    timings_ms: dict[str, float]
    version: str
    batch_size: int
    encode_kind: str
    model_flops: float

    @property
    def server_timing(self) -> str:
        return ", ".join(f"{k};dur={v:.3f}" for k, v in self.timings_ms.items())


def read_many(features: FeatureReader, user_ids: Sequence[int]) -> list[Mapping[str, Any] | None]:
    """Every user's feature row, in one call when the reader supports it."""
    batched = getattr(features, "read_many", None)
    if batched is not None:
        return list(batched(user_ids))
    return [features.read(u) for u in user_ids]


def _answer(
    job: Job, p: Pending, result: RetrievalResult | RecommendResult, feature_ms: float, fields: dict[str, Any]
) -> Served:
    """The response of one request of a batch: its own `fields`, then the version that served it
    and the request's echo; its stage timings (queue, feature, the batch's, total)."""
    loaded = p.loaded
    body = {
        **fields,
        "model_version": loaded.model_version,
        "index_version": loaded.index_version,
        "version": loaded.version,
        "served_by": p.role,
        "surface": p.surface,
        "user_id": p.user_id,
        "k": p.k,
    }
    timings = {
        "queue": (job.started - job.enqueued) * 1e3,
        "feature": feature_ms,
        **result.timings_ms,
        "total": (time.perf_counter() - p.received) * 1e3,
    }
    return Served(
        json.dumps(body).encode(), timings, loaded.version, result.batch_size, result.encode_kind, result.model_flops
    )


def _explored_entry(item: int, propensity: float) -> dict[str, Any]:
    """A listed entry of an exploration slot: no score, outcome ``explore``."""
    return {"item_id": int(item), "score": None, "outcome": "explore", "offset": None, "propensity": propensity}


class RetrievalService:
    def __init__(
        self,
        manager: VersionManager,
        features: FeatureReader | None = None,
        config: ServingConfig | None = None,
        on_feature_error: Callable[[int], None] | None = None,
    ) -> None:
        self.manager = manager
        self.features = features
        self.config = config or ServingConfig()
        self.on_feature_error = on_feature_error or (lambda n: None)
        self.states = EncoderStateCache(int(self.config.encoder_cache_mb * 2**20))
        self.exploration_rng = np.random.default_rng(self.config.exploration_seed)
        manager.on_swap(self._swapped)
        self.batcher = MicroBatcher(
            self.process, max_wait_ms=self.config.max_wait_ms, max_batch=self.config.max_batch, name="retrieval-batcher"
        )

    def _swapped(self, surface: str, replaced: list[LoadedVersion]) -> None:
        dropped = self.states.retire(v.state_key for v in replaced)
        if replaced:
            log.info("%s: dropped %d encoder states of %s", surface, dropped, [v.version for v in replaced])
        gc.freeze()  # the newly loaded version is long-lived: keep it out of full collections

    def start(self) -> None:
        gc.freeze()
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()

    def submit(self, pending: Pending, done: Callable[[Served | BaseException], None]) -> None:
        self.batcher.submit(pending, done)

    def serve_now(self, pending: Pending) -> Served:
        """One request on the caller's thread, as a batch of one (no queue)."""
        job = Job(pending, lambda _: None, enqueued=pending.received)
        job.started, job.batch_size = time.perf_counter(), 1
        result = self.process([job])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- one batch --------------------------------------------------------------------------

    def _rows(self, pending: Sequence[Pending]) -> list[Mapping[str, Any] | None]:
        if self.features is None:
            return [None] * len(pending)
        users = [p.user_id for p in pending]
        try:
            return read_many(self.features, users)
        except Exception as exc:  # noqa: BLE001 - degrade to recent_events
            self.on_feature_error(len(users))
            log.warning("feature read failed for %d users (%s...): %s", len(users), users[:3], exc)
            return [None] * len(pending)

    def process(self, jobs: Sequence[Job]) -> list[Served | BaseException]:
        pending: list[Pending] = [j.item for j in jobs]
        t0 = time.perf_counter()
        rows = self._rows(pending)
        sequences = []
        for p, row in zip(pending, rows):
            seq = UserSequence.from_features(row)
            if p.recent_events:
                seq = seq.extended(p.recent_events, p.loaded.codes)
            sequences.append(seq)
        feature_ms = (time.perf_counter() - t0) * 1e3
        groups: dict[tuple[int, str], list[int]] = {}
        for i, p in enumerate(pending):
            groups.setdefault((id(p.loaded), p.endpoint), []).append(i)
        out: list[Served | BaseException] = [RuntimeError("not served")] * len(jobs)
        for (_, endpoint), members in groups.items():
            loaded = pending[members[0]].loaded
            try:
                if endpoint == "recommend":
                    ranked = loaded.recommend_batch(
                        [
                            RecommendRequest(
                                sequences[i],
                                pending[i].k,
                                pending[i].outcome_weights,
                                pending[i].user_id,
                                pending[i].candidates,
                                pending[i].query_id,
                            )
                            for i in members
                        ],
                        self.states,
                        self.config.recommend_candidates,
                    )
                    for i, result in zip(members, ranked):
                        out[i] = self._recommended(
                            jobs[i], pending[i], result, feature_ms, self._explorer(i, pending, sequences)
                        )
                    continue
                results = loaded.retrieve_batch(
                    [
                        RetrievalRequest(
                            sequences[i],
                            pending[i].k,
                            pending[i].outcome_weights,
                            pending[i].user_id,
                            pending[i].query_id,
                        )
                        for i in members
                    ],
                    self.states,
                )
                for i, result in zip(members, results):
                    out[i] = self._served(
                        jobs[i], pending[i], result, feature_ms, self._explorer(i, pending, sequences)
                    )
            except Exception as exc:  # noqa: BLE001 - this version's requests fail, the rest are served
                log.exception("retrieval failed on %s", loaded.version)
                for i in members:
                    out[i] = exc
        return out

    def _explorer(
        self, i: int, pending: Sequence[Pending], sequences: Sequence[UserSequence]
    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        """The request's exploration: its listed entries with the surface's share of slots
        replaced by uniformly random catalogue items (not in the user's sequence), every entry
        with its ``propensity``; the entries unchanged when the surface has no share."""
        p = pending[i]
        share = self.config.exploration.share(p.surface)

        def apply(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if share <= 0.0:
                return entries
            by_item = {e["item_id"]: e for e in entries}
            items, props = explore(
                list(by_item), p.k, p.loaded.item_ids, share, self.exploration_rng, sequences[i].item_ids
            )
            return [
                {**by_item[item], "propensity": prop} if prop == 1.0 else _explored_entry(item, prop)
                for item, prop in zip(items, props)
            ]

        return apply

    @staticmethod
    def _served(job: Job, p: Pending, result: RetrievalResult, feature_ms: float, explored=None) -> Served:
        entries = [
            {
                "item_id": int(c.item),
                "score": float(c.score),
                "outcome": str(c.outcome),
                "offset": str(c.offset),
            }
            for c in result.candidates
        ]
        return _answer(job, p, result, feature_ms, {"candidates": explored(entries) if explored else entries})

    @staticmethod
    def _recommended(job: Job, p: Pending, result: RecommendResult, feature_ms: float, explored=None) -> Served:
        entries = [
            {
                "item_id": r.item,
                "score": r.score,
                "probabilities": r.probabilities,
                "retrieval_score": r.retrieval_score,
                "outcome": r.outcome,
                "offset": r.offset,
            }
            for r in result.items
        ]
        return _answer(
            job,
            p,
            result,
            feature_ms,
            {
                "items": explored(entries) if explored else entries,
                "ranked_by": result.ranked_by,
                "candidates_ranked": result.n_candidates,
            },
        )
