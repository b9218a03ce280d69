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
from serving import encoder as enc
from serving.encoder_state import EncoderStateCache
from serving.index import read_index
from serving.registry import (
    INDEX_FILE,
    ITEM_IDS_FILE,
    MODEL_FILE,
    IntegrityError,
    LocalVersion,
)
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
    user_id: int | None = None                          # key of the user's encoder state


@dataclass
class RetrievalResult:
    candidates: list[Candidate]
    timings_ms: dict[str, float] = field(default_factory=dict)
    n_queries: int = 0
    batch_size: int = 1
    encode_kind: str = ""       # serving.encoder_state.ENCODE_KINDS
    model_flops: float = 0.0    # encoder positions actually encoded + the head

def check_version_codes(surface: str, version: str, model_cfg: Mapping[str, Any],
                        feature_codes: Mapping[str, Any], features_where: str = "the features") -> None:
    """Refuse a version whose model codes (its manifest's `config.model`, the built-in codes for
    manifests from before vocabularies) give an outcome or a surface another code than the
    features it reads: its embeddings would read every event as another outcome."""
    from events.vocabulary import check_codes_agree
    from training.model import PinRecConfig

    cfg = PinRecConfig.from_dict({"n_items": 0, **dict(model_cfg)})
    codes = EventCodes(outcomes=tuple(cfg.outcomes), surfaces=tuple(cfg.surfaces), engaged=(), impression=None,
                       negative=())
    check_codes_agree(codes, feature_codes, f"version {surface}/{version}", features_where)


class LoadedVersion:
    """Model, index and item ids of one version, checked against each other."""

    def __init__(self, surface: str, version: str, manifest: dict[str, Any], model: Any,
                 index: faiss.Index, item_ids: np.ndarray) -> None:
        self.surface = surface
        self.version = version
        self.manifest = manifest
        self.model = model
        # the codes the model was trained with, and its engaged outcomes (manifests from before
        # vocabularies: the built-in data's)
        engaged = manifest.get("config", {}).get("vocabulary", {}).get("engaged")
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
        self.default_outcome_weights = dict(serving_cfg.get("outcome_weights")
                                            or enc.DEFAULT_OUTCOME_WEIGHTS)
        if index.ntotal != len(item_ids):
            raise IntegrityError(f"{surface}/{version}: index holds {index.ntotal} vectors, "
                                 f"item_ids {len(item_ids)}")
        if index.d != self.encoder.dim:
            raise IntegrityError(f"{surface}/{version}: index dim {index.d} != model dim {self.encoder.dim}")
        if not np.array_equal(item_ids, enc.item_table_ids(model)):
            raise IntegrityError(f"{surface}/{version}: item_ids.npy does not match the model's items")

    def _search_unseen(self, queries: np.ndarray, query_request: np.ndarray, ks: list[int],
                       seen: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        want = np.minimum(ntotal, k_q + n_seen)            # what one full search per query asks
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

    def _unseen(self, rows: np.ndarray, query_request: np.ndarray,
                seen: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        valid = rows >= 0
        for r, s in enumerate(seen):
            if len(s):
                q = query_request == r
                valid[q] &= ~np.isin(ids[q], s)
        return ids, valid

    @classmethod
    def from_local(cls, local: LocalVersion, feature_codes: Mapping[str, Any] | None = None,
                   features_where: str = "the features") -> LoadedVersion:
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

    def retrieve(self, seq: enc.UserSequence, k: int,
                 outcome_weights: Mapping[str, float] | None = None) -> RetrievalResult:
        """One request, no encoder state: a batch of one."""
        return self.retrieve_batch([RetrievalRequest(seq, k, outcome_weights)])[0]

    def retrieve_batch(self, requests: Sequence[RetrievalRequest],
                       states: EncoderStateCache | None = None) -> list[RetrievalResult]:
        t0 = time.perf_counter()
        weights = [dict(r.outcome_weights or self.default_outcome_weights) for r in requests]
        budgets = [self.encoder.budget(w) for w in weights]
        windows = [self.encoder.window(r.sequence) for r in requests]
        use_states = states is not None and states.enabled
        past = [states.get(self.state_key, r.user_id) if use_states and r.user_id is not None else None
                for r in requests]  # type: ignore[union-attr]
        h, new_states, kinds, flops = self.encoder.encode_last(windows, past, keep_states=use_states)
        if use_states:
            for r, st, old in zip(requests, new_states, past):
                if r.user_id is not None and st is not None and st is not old:
                    states.put(self.state_key, r.user_id, st)  # type: ignore[union-attr]
        if states is not None:
            states.count(kinds)
        queries, flops_per_query = self.encoder.queries_for(h, budgets)
        t1 = time.perf_counter()
        seen = [np.unique(r.sequence.item_ids) for r in requests]
        query_request = np.repeat(np.arange(len(requests)), [len(b) for b in budgets])
        ids, scores, valid = self._search_unseen(queries, query_request, [r.k for r in requests], seen)
        t2 = time.perf_counter()
        results, start = [], 0
        encode_ms, ann_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        for r, w, budget, kind, f in zip(requests, weights, budgets, kinds, flops):
            tm = time.perf_counter()
            q = slice(start, start + len(budget))
            start += len(budget)
            candidates = merge_rows([o for o, _ in budget], [f for _, f in budget], ids[q], scores[q],
                                    valid[q], w, r.k)
            results.append(RetrievalResult(
                candidates, {"encode": encode_ms, "ann": ann_ms, "merge": (time.perf_counter() - tm) * 1e3},
                len(budget), len(requests), kind, f + flops_per_query * len(budget)))
        return results
