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

class LoadedVersion:
    """Model, index and item ids of one version, checked against each other."""

    def __init__(self, surface: str, version: str, manifest: dict[str, Any], model: Any,
                 index: faiss.Index, item_ids: np.ndarray) -> None:
        self.surface = surface
        self.version = version
        self.manifest = manifest
        self.model = model
        self.encoder = enc.Encoder(model)
        self.index = index
        self.item_ids = item_ids
        # encoder states are kept per (this load of the version, user): unique per load
        self.state_key = f"{surface}/{version}#{next(_LOADS)}"
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

    @classmethod
    def from_local(cls, local: LocalVersion) -> LoadedVersion:
        """Load a fetched (checksum-verified) version: weights with weights_only=True."""
        manifest = local.manifest
        model_cfg = manifest.get("config", {}).get("model")
        if not isinstance(model_cfg, dict):
            raise IntegrityError(f"{local.surface}/{local.version}: manifest has no config.model")
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
            states.count(kinds)  # type: ignore[union-attr]
        queries, flops_per_query = self.encoder.queries_for(h, budgets)
        t1 = time.perf_counter()
        seen = [np.unique(r.sequence.item_ids) for r in requests]
        k_search = int(min(self.index.ntotal, max(r.k + len(s) for r, s in zip(requests, seen))))
        scores, rows = self.index.search(queries, k_search)  # faiss CPU search is thread-safe
        t2 = time.perf_counter()
        results, start = [], 0
        encode_ms, ann_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        for r, w, budget, s, kind, f in zip(requests, weights, budgets, seen, kinds, flops):
            tm = time.perf_counter()
            q = slice(start, start + len(budget))
            start += len(budget)
            ids = np.where(rows[q] >= 0, self.item_ids[np.maximum(rows[q], 0)], -1)
            valid = (rows[q] >= 0) & ~np.isin(ids, s)
            valid &= np.cumsum(valid, axis=1) <= r.k  # each query's best k unseen items
            candidates = merge_rows([o for o, _ in budget], [f for _, f in budget], ids, scores[q],
                                    valid, w, r.k)
            results.append(RetrievalResult(
                candidates, {"encode": encode_ms, "ann": ann_ms, "merge": (time.perf_counter() - tm) * 1e3},
                len(budget), len(requests), kind, f + flops_per_query * len(budget)))
        return results
