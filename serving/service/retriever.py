"""A loaded, verified version and the retrieval pipeline it serves.

``retrieve_batch(requests, states)``: for a batch of requests (sequence, k, outcome weights):
encode every sequence's last hidden state in one batched, incremental pass
(``Encoder.encode_last``, with the users' cached states when ``states`` is given), the head for
every (request, outcome with weight > 0, offset) at once, one faiss search of all the batch's
queries, then per request: drop seen items (vectorised) and merge by outcome budget
(``training.merge.merge_rows``: quota per outcome by weight, de-duplicated, best score first).
Each candidate keeps the outcome and offset of the query that produced it. The results equal
those of one request at a time (``retrieve``) to float rounding. Stage times (the batch's encode
and search, the request's merge), the batch size and the request's model FLOPs come with each
result.

``recommend_batch(requests, states, n_candidates)``: retrieval as above for ``n_candidates``
per request (or the request's own candidates), then the ranking head (a version whose model has
one) scores every request's candidates against the keys/values the retrieval encode left (the
history is never encoded twice), in one batched pass; each candidate gets a probability per
ranked outcome and the combined score ``sum_o w_o p_o`` (the request's normalised outcome weights;
an outcome the head does not predict counts 0), and the top k by that score are returned. A
version without a ranking head orders by the retrieval score instead (``ranked_by:
"retrieval"``; for given candidates: ``sum_o w_o max_offset <q_o, e_item>``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import torch

from events.contract import EventCodes
from serving.registry.index import read_index
from serving.registry.local import LocalVersion
from serving.registry.manifest import INDEX_FILE, ITEM_IDS_FILE, MODEL_FILE, IntegrityError
from serving.service import encoder as enc
from serving.service.encoder_state import EncoderStateCache
from training.merge import Candidate, merge_rows

_LOADS = itertools.count()
SEEN_MARGIN = 32  # results searched beyond k for a request's seen items (see _search_unseen)


def set_threads(faiss_threads: int | None = None, torch_threads: int | None = None) -> None:
    """Serving runs one query at a time per request: 1 faiss / torch thread by default."""
    if faiss_threads:
        faiss.omp_set_num_threads(int(faiss_threads))
    if torch_threads:
        torch.set_num_threads(int(torch_threads))


@dataclass
class RetrievalRequest:
    sequence: enc.UserSequence
    k: int
    outcome_weights: Mapping[str, float] | None = None  # None: the version's defaults
    user_id: int | None = None  # key of the user's encoder state
    query_id: int | None = None  # a search request's query (training.queries; None: none)


@dataclass
class RetrievalResult:
    candidates: list[Candidate]
    timings_ms: dict[str, float] = field(default_factory=dict)
    n_queries: int = 0
    batch_size: int = 1
    encode_kind: str = ""  # serving.service.encoder_state.ENCODE_KINDS
    model_flops: float = 0.0  # encoder positions actually encoded + the head


DEFAULT_RECOMMEND_CANDIDATES = 200  # retrieved per /v1/recommend request, then ranked


@dataclass
class RecommendRequest:
    sequence: enc.UserSequence
    k: int
    outcome_weights: Mapping[str, float] | None = None  # None: the version's defaults
    user_id: int | None = None  # key of the user's encoder state
    candidates: Sequence[int] | None = None  # the client's own candidates (no retrieval)
    query_id: int | None = None  # a search request's query (training.queries; None: none)


@dataclass
class Recommendation:
    item: int
    score: float  # combined: sum_o w_o p_o (retrieval score without a head)
    probabilities: dict[str, float] | None  # per ranked outcome; None without a ranking head
    retrieval_score: float | None  # of the retrieval query that found it
    outcome: str | None  # that query's outcome and offset (None: given candidate)
    offset: str | None


@dataclass
class RecommendResult:
    items: list[Recommendation]
    ranked_by: str  # "ranking_head" or "retrieval"
    n_candidates: int  # candidates ranked
    timings_ms: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1
    encode_kind: str = ""
    model_flops: float = 0.0  # encode + retrieval head + ranking head


def check_version_codes(
    surface: str,
    version: str,
    model_cfg: Mapping[str, Any],
    feature_codes: Mapping[str, Any],
    features_where: str = "the features",
) -> None:
    """Refuse a version whose model codes (its manifest's `config.model`, the built-in codes for
    manifests from before vocabularies) give an outcome or a surface another code than the
    features it reads: its embeddings would read every event as another outcome."""
    from events.vocabulary import check_codes_agree
    from training.model import PinRecConfig

    cfg = PinRecConfig.from_dict({"n_items": 0, **dict(model_cfg)})
    codes = EventCodes(
        outcomes=tuple(cfg.outcomes), surfaces=tuple(cfg.surfaces), engaged=(), impression=None, negative=()
    )
    check_codes_agree(codes, feature_codes, f"version {surface}/{version}", features_where)


class LoadedVersion:
    """Model, index and item ids of one version, checked against each other."""

    def __init__(
        self, surface: str, version: str, manifest: dict[str, Any], model: Any, index: faiss.Index, item_ids: np.ndarray
    ) -> None:
        self.surface = surface
        self.version = version
        self.manifest = manifest
        self.model = model
        # the codes the model was trained with, and its engaged outcomes (manifests from before
        # vocabularies: the built-in data's)
        vocabulary = manifest.get("config", {}).get("vocabulary", {})
        engaged = vocabulary.get("engaged")
        # a vocabulary whose items are engaged again (groceries): nothing seen is filtered out
        self.repeats = bool(vocabulary.get("repeats", False))
        self.codes = enc.model_codes(model, engaged)
        self.encoder = enc.Encoder(model, self.codes.engaged_codes)
        self.index = index
        self.item_ids = item_ids
        # encoder states are kept per (this load of the version, user): unique per load
        self.state_key = f"{surface}/{version}#{next(_LOADS)}"
        self.searches_again = 0  # queries searched a second time for lack of unseen results
        files = manifest["files"]
        self.model_version = f"{version}/model-{files[MODEL_FILE]['sha256'][:12]}"
        self.index_version = f"{version}/index-{files[INDEX_FILE]['sha256'][:12]}"
        serving_cfg = manifest.get("config", {}).get("serving", {})
        self.default_outcome_weights = dict(serving_cfg.get("outcome_weights") or enc.DEFAULT_OUTCOME_WEIGHTS)
        if index.ntotal != len(item_ids):
            raise IntegrityError(f"{surface}/{version}: index holds {index.ntotal} vectors, item_ids {len(item_ids)}")
        if index.d != self.encoder.dim:
            raise IntegrityError(f"{surface}/{version}: index dim {index.d} != model dim {self.encoder.dim}")
        if not np.array_equal(item_ids, enc.item_table_ids(model)):
            raise IntegrityError(f"{surface}/{version}: item_ids.npy does not match the model's items")

    def _search_unseen(
        self, queries: np.ndarray, query_request: np.ndarray, ks: list[int], seen: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One faiss search of every query; per query its best k unseen items.

        Returns (item ids, scores, valid) of shape (Q, n): valid marks each query's first k
        results that are not among its request's seen items. The search asks for k plus a
        margin for seen items (``SEEN_MARGIN``), not k + every seen item: a query left with
        fewer than k unseen results is searched again with k + its seen count, so the answer is
        that of one search of k + seen (faiss's top lists are prefixes of longer ones).
        """
        ntotal = self.index.ntotal
        k_q = np.array(ks)[query_request]
        n_seen = np.array([len(s) for s in seen])[query_request]
        want = np.minimum(ntotal, k_q + n_seen)  # what one full search per query asks
        first = int(min(ntotal, (k_q + np.minimum(n_seen, SEEN_MARGIN)).max()))
        scores, rows = self.index.search(queries, first)  # faiss CPU search is thread-safe
        ids, valid = self._unseen(rows, query_request, seen)
        short = np.nonzero((valid.sum(1) < k_q) & (want > first))[0]
        self.searches_again += len(short)
        if len(short):
            again = int(want[short].max())
            s2, r2 = self.index.search(queries[short], again)
            pad = again - first
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
            scores[short], rows[short] = s2, r2
            ids, valid = self._unseen(rows, query_request, seen)
        valid &= np.cumsum(valid, axis=1) <= k_q[:, None]  # each query's best k unseen items
        return ids, scores, valid

    def _seen(self, seq: enc.UserSequence) -> np.ndarray:
        """The items not to serve `seq`'s user: every item acted on or shown lately (none when the
        vocabulary allows repeats)."""
        return np.zeros(0, np.int64) if self.repeats else seq.seen_items()

    def _unseen(
        self, rows: np.ndarray, query_request: np.ndarray, seen: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        valid = rows >= 0
        for r, s in enumerate(seen):
            if len(s):
                q = query_request == r
                valid[q] &= ~np.isin(ids[q], s)
        return ids, valid

    @classmethod
    def from_local(
        cls, local: LocalVersion, feature_codes: Mapping[str, Any] | None = None, features_where: str = "the features"
    ) -> LoadedVersion:
        """Load a fetched (checksum-verified) version: weights with weights_only=True.
        `feature_codes` ({"outcomes": names by code, "surfaces": ...}): the codes of the features
        the version will read; a version whose model codes disagree with them is refused
        (`events.vocabulary.VocabularyMismatchError`) before its weights are loaded."""
        manifest = local.manifest
        model_cfg = manifest.get("config", {}).get("model")
        if not isinstance(model_cfg, dict):
            raise IntegrityError(f"{local.surface}/{local.version}: manifest has no config.model")
        if feature_codes is not None:
            check_version_codes(local.surface, local.version, model_cfg, feature_codes, features_where)
        model = enc.load_weights(model_cfg, str(local.path(MODEL_FILE)))
        index = read_index(str(local.path(INDEX_FILE)), manifest.get("index", {}).get("params"))
        item_ids = np.load(local.path(ITEM_IDS_FILE), allow_pickle=False).astype(np.int64)
        return cls(local.surface, local.version, manifest, model, index, item_ids)

    def retrieve(
        self,
        seq: enc.UserSequence,
        k: int,
        outcome_weights: Mapping[str, float] | None = None,
        query_id: int | None = None,
    ) -> RetrievalResult:
        """One request, no encoder state: a batch of one."""
        return self.retrieve_batch([RetrievalRequest(seq, k, outcome_weights, None, query_id)])[0]

    def _encode_users(self, requests: Sequence[Any], states: EncoderStateCache | None, need_cache: bool):
        """Windows, encoder states looked up and stored back: (h, kinds, flops, caches)."""
        windows = [self.encoder.window(r.sequence) for r in requests]
        use_states = states is not None and states.enabled
        past = [
            states.get(self.state_key, r.user_id) if use_states and r.user_id is not None else None for r in requests
        ]  # type: ignore[union-attr]
        h, new_states, kinds, flops, caches = self.encoder.encode_with_cache(
            windows, past, keep_states=use_states, need_cache=need_cache
        )
        if use_states:
            for r, st, old in zip(requests, new_states, past):
                if r.user_id is not None and st is not None and st is not old:
                    states.put(self.state_key, r.user_id, st)  # type: ignore[union-attr]
        if states is not None:
            states.count(kinds)
        return h, kinds, flops, caches

    def recommend(
        self,
        seq: enc.UserSequence,
        k: int,
        outcome_weights: Mapping[str, float] | None = None,
        candidates: Sequence[int] | None = None,
        n_candidates: int = DEFAULT_RECOMMEND_CANDIDATES,
    ) -> RecommendResult:
        """One request, no encoder state: a batch of one."""
        return self.recommend_batch(
            [RecommendRequest(seq, k, outcome_weights, None, candidates)], n_candidates=n_candidates
        )[0]

    def recommend_batch(
        self,
        requests: Sequence[RecommendRequest],
        states: EncoderStateCache | None = None,
        n_candidates: int = DEFAULT_RECOMMEND_CANDIDATES,
    ) -> list[RecommendResult]:
        t0 = time.perf_counter()
        ranks = self.encoder.ranks
        weights = [dict(r.outcome_weights or self.default_outcome_weights) for r in requests]
        budgets = [self.encoder.budget(w) for w in weights]
        h, kinds, flops, caches = self._encode_users(requests, states, need_cache=ranks)
        queries, flops_per_query = self.encoder.queries_for(h, budgets, [r.query_id for r in requests])
        t1 = time.perf_counter()
        # candidates: retrieved (n_candidates, seen items left out) or the request's own
        starts = np.concatenate([[0], np.cumsum([len(b) for b in budgets])])
        found: list[list[Candidate]] = [[] for _ in requests]
        ann = [i for i, r in enumerate(requests) if r.candidates is None]
        if ann:
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in ann])
            query_request = np.repeat(np.arange(len(ann)), [len(budgets[i]) for i in ann])
            seen = [self._seen(requests[i].sequence) for i in ann]
            ids, scores, valid = self._search_unseen(queries[rows], query_request, [n_candidates] * len(ann), seen)
            at = 0
            for i in ann:
                q = slice(at, at + len(budgets[i]))
                at += len(budgets[i])
                found[i] = merge_rows(
                    [o for o, _ in budgets[i]],
                    [f for _, f in budgets[i]],
                    ids[q],
                    scores[q],
                    valid[q],
                    weights[i],
                    n_candidates,
                )
        for i, r in enumerate(requests):
            if r.candidates is not None:
                given = list(dict.fromkeys(int(c) for c in r.candidates))
                known = self.encoder.to_index(np.array(given, np.int64)) > 0 if given else np.zeros(0, bool)
                found[i] = [Candidate(c, float("nan"), None, None) for c, ok in zip(given, known) if ok]
        t2 = time.perf_counter()
        index = [self.encoder.to_index(np.array([c.item for c in f], np.int64)) for f in found]
        probs: list[np.ndarray | None] = [None] * len(requests)
        rank_f = [0.0] * len(requests)
        if ranks:
            surface = self.codes.surface_code.get(self.surface, 0)
            probs, rank_f = self.encoder.rank(caches, h, index, [surface] * len(requests))  # type: ignore[arg-type]
        t3 = time.perf_counter()
        results = []
        outcomes = self.encoder.rank_outcomes
        for i, r in enumerate(requests):
            tm = time.perf_counter()
            f = found[i]
            if ranks:
                w = np.array([weights[i].get(o, 0.0) for o in outcomes], np.float64)
                combined = probs[i].astype(np.float64) @ w if len(f) else np.zeros(0)  # type: ignore[union-attr]
            elif r.candidates is not None:
                combined = self._retrieval_scores(queries[starts[i] : starts[i + 1]], budgets[i], index[i], weights[i])
            else:
                combined = np.array([c.score for c in f], np.float64)
            order = np.argsort(-combined, kind="stable")[: r.k]
            items = [
                Recommendation(
                    int(f[j].item),
                    float(combined[j]),
                    {o: float(p) for o, p in zip(outcomes, probs[i][j])} if ranks else None,  # type: ignore[index]
                    None if r.candidates is not None else float(f[j].score),
                    None if f[j].outcome is None else str(f[j].outcome),
                    None if f[j].offset is None else str(f[j].offset),
                )
                for j in order.tolist()
            ]
            results.append(
                RecommendResult(
                    items,
                    "ranking_head" if ranks else "retrieval",
                    len(f),
                    {
                        "encode": (t1 - t0) * 1e3,
                        "ann": (t2 - t1) * 1e3,
                        "rank": (t3 - t2) * 1e3,
                        "merge": (time.perf_counter() - tm) * 1e3,
                    },
                    len(requests),
                    kinds[i],
                    flops[i] + flops_per_query * len(budgets[i]) + rank_f[i],
                )
            )
        return results

    def score_items(
        self,
        seq: enc.UserSequence,
        items: Sequence[int],
        outcomes: Sequence[str],
        outcome_weights: Mapping[str, float] | None = None,
        surface: str | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, str]:
        """Scores of given items for one user on `surface` (default the version's) (the canary's
        slates): (the items the model knows,
        {outcome: score per known item}, the combined score, ranked_by). With a ranking head the
        scores are its probabilities and the combined score is ``recommend``'s; without one, the
        retrieval score of each outcome's queries (max over offsets) and their weighted sum."""
        weights = dict(outcome_weights or self.default_outcome_weights)
        given = np.array(list(dict.fromkeys(int(i) for i in items)), np.int64)
        index = self.encoder.to_index(given)
        known, index = given[index > 0], index[index > 0]
        h, _, _, caches = self._encode_users([RetrievalRequest(seq, 1)], None, need_cache=self.encoder.ranks)
        if self.encoder.ranks:
            code = self.codes.surface_code.get(surface or self.surface, 0)
            probs = self.encoder.rank(caches, h, [index], [code])[0][0].astype(np.float64)  # type: ignore[arg-type]
            ranked = self.encoder.rank_outcomes
            w = np.array([weights.get(o, 0.0) for o in ranked])
            return known, {o: probs[:, ranked.index(o)] for o in outcomes if o in ranked}, probs @ w, "ranking_head"
        wanted = list(dict.fromkeys([*outcomes, *(o for o, v in weights.items() if v > 0)]))
        wanted = [o for o in wanted if o in self.model.cfg.outcomes]
        budget = [(o, f) for o in wanted for f in self.encoder.offsets]
        queries, _ = self.encoder.queries_for(h, [budget])
        with torch.inference_mode():
            e = self.model.item_embeddings(torch.from_numpy(index)).numpy() if len(index) else np.zeros((0, h.shape[1]))
        s = queries @ e.T  # (Q, C)
        per = {o: s[[j for j, (oo, _) in enumerate(budget) if oo == o]].max(0) for o in wanted}
        combined = sum((float(weights.get(o, 0.0)) * per[o] for o in wanted), np.zeros(len(index)))
        return known, {o: per[o] for o in outcomes if o in per}, combined, "retrieval"

    def _retrieval_scores(
        self, queries: np.ndarray, budget: Sequence[tuple[str, str]], index: np.ndarray, weights: Mapping[str, float]
    ) -> np.ndarray:
        """sum_o w_o max over o's offsets of <q_(o, offset), e_item>: given candidates scored by a
        version without a ranking head."""
        if len(index) == 0:
            return np.zeros(0)
        with torch.inference_mode():
            e = self.model.item_embeddings(torch.from_numpy(index)).numpy()  # (C, d)
        s = queries @ e.T  # (Q, C)
        total = np.zeros(len(index))
        for o in dict.fromkeys(o for o, _ in budget):
            rows = [j for j, (oo, _) in enumerate(budget) if oo == o]
            total += float(weights.get(o, 0.0)) * s[rows].max(0)
        return total

    def retrieve_batch(
        self, requests: Sequence[RetrievalRequest], states: EncoderStateCache | None = None
    ) -> list[RetrievalResult]:
        t0 = time.perf_counter()
        weights = [dict(r.outcome_weights or self.default_outcome_weights) for r in requests]
        budgets = [self.encoder.budget(w) for w in weights]
        h, kinds, flops, _ = self._encode_users(requests, states, need_cache=False)
        queries, flops_per_query = self.encoder.queries_for(h, budgets, [r.query_id for r in requests])
        t1 = time.perf_counter()
        seen = [self._seen(r.sequence) for r in requests]
        query_request = np.repeat(np.arange(len(requests)), [len(b) for b in budgets])
        ids, scores, valid = self._search_unseen(queries, query_request, [r.k for r in requests], seen)
        t2 = time.perf_counter()
        results, start = [], 0
        encode_ms, ann_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        for r, w, budget, kind, f in zip(requests, weights, budgets, kinds, flops):
            tm = time.perf_counter()
            q = slice(start, start + len(budget))
            start += len(budget)
            candidates = merge_rows([o for o, _ in budget], [f for _, f in budget], ids[q], scores[q], valid[q], w, r.k)
            results.append(
                RetrievalResult(
                    candidates,
                    {"encode": encode_ms, "ann": ann_ms, "merge": (time.perf_counter() - tm) * 1e3},
                    len(budget),
                    len(requests),
                    kind,
                    f + flops_per_query * len(budget),
                )
            )
        return results
