"""A loaded, verified version and the retrieval pipeline it serves.

``retrieve(sequence, k, outcome_weights)``: encode (one query per (outcome, offset) in the
budget, ``serving.encoder``), ANN search (one faiss search of all the queries), drop seen items
(vectorised, before the merge), then ``training.merge.merge_by_budget`` (quota per outcome by
weight, de-duplicated, best score first). Each candidate keeps the outcome and offset of the
query that produced it. Stage times are returned with the result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import torch

from serving import encoder as enc
from serving.index import read_index
from serving.registry import (
    INDEX_FILE,
    ITEM_IDS_FILE,
    MODEL_FILE,
    IntegrityError,
    LocalVersion,
)
from training.merge import Candidate, merge_by_budget


def set_threads(faiss_threads: int | None = None, torch_threads: int | None = None) -> None:
    """Serving runs one query at a time per request: 1 faiss / torch thread by default."""
    if faiss_threads:
        faiss.omp_set_num_threads(int(faiss_threads))
    if torch_threads:
        torch.set_num_threads(int(torch_threads))


@dataclass
class RetrievalResult:
    candidates: list[Candidate]
    timings_ms: dict[str, float] = field(default_factory=dict)
    n_queries: int = 0


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
        weights = dict(outcome_weights or self.default_outcome_weights)
        budget = self.encoder.budget(weights)
        t0 = time.perf_counter()
        queries = self.encoder.queries(seq, budget)
        t1 = time.perf_counter()
        seen = np.unique(seq.item_ids)
        k_search = int(min(self.index.ntotal, k + len(seen)))
        scores, rows = self.index.search(queries, k_search)  # faiss CPU search is thread-safe
        t2 = time.perf_counter()
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        valid = (rows >= 0) & ~np.isin(ids, seen)
        lists = []
        for q, (outcome, offset) in enumerate(budget):
            keep = valid[q]
            lists.append((outcome, offset, ids[q][keep][:k].tolist(), scores[q][keep][:k].tolist()))
        candidates = merge_by_budget(lists, weights, k)
        t3 = time.perf_counter()
        return RetrievalResult(candidates, {"encode": (t1 - t0) * 1e3, "ann": (t2 - t1) * 1e3,
                                            "merge": (t3 - t2) * 1e3}, len(budget))
