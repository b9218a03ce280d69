"""Publish a model as a version: item table -> tuned faiss index -> files -> registry.

``publish_model(registry, surface, model, ...)`` builds the index from the model's item
embeddings (``serving.index.build_tuned_index``: type by catalogue size, tuned to recall@100 >=
0.98 against exact search), writes ``model.pt`` (state_dict only), ``index.faiss`` and
``item_ids.npy`` (row -> contract item id) to a temporary directory and hands them to
``Registry.publish``, which uploads them and writes the manifest last. The manifest's
``config`` holds ``model`` (the PinRecConfig, needed to load the weights), ``serving`` (default
outcome weights) and whatever the caller adds; ``index`` holds kind, search parameters and the
measured recall.

``publish_run_dir`` does the same from a training run directory (``model.pt`` +
``config.json`` as ``training.train.save_model`` writes them).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serving import encoder as enc
from serving.index import TARGET_RECALL, TuneResult, build_tuned_index, write_index
from serving.registry import INDEX_FILE, ITEM_IDS_FILE, MODEL_FILE, Registry


def publish_model(
    registry: Registry,
    surface: str,
    model: Any,
    *,
    metrics: Mapping[str, Any] | None = None,
    data_partitions: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
    parents: Sequence[str] = (),
    outcome_weights: Mapping[str, float] | None = None,
    index_kind: str | None = None,
    tune_queries: np.ndarray | None = None,
    target_recall: float = TARGET_RECALL,
    created_at: datetime | None = None,
    index_shards: int = 1,
) -> tuple[str, TuneResult]:
    """Build, tune and publish; returns (version id, tuning result). ``index_shards`` > 1: a
    sharded index (`serving.shards`, still the one file ``index.faiss``)."""
    vectors, item_ids = enc.item_table(model)
    index, tuned = build_tuned_index(vectors, index_kind, queries=tune_queries,
                                     target_recall=target_recall, shards=index_shards)
    weights = dict(outcome_weights or enc.DEFAULT_OUTCOME_WEIGHTS)
    enc.check_outcomes(weights)
    full_config = {**dict(config or {}), "model": enc.model_config(model),
                   "serving": {"outcome_weights": weights}}
    with tempfile.TemporaryDirectory(prefix="pinrec-publish-") as tmp:
        d = Path(tmp)
        torch.save(enc.model_state(model), d / MODEL_FILE)
        write_index(index, str(d / INDEX_FILE))
        np.save(d / ITEM_IDS_FILE, item_ids.astype(np.int64), allow_pickle=False)
        version = registry.publish(
            surface,
            {MODEL_FILE: d / MODEL_FILE, INDEX_FILE: d / INDEX_FILE, ITEM_IDS_FILE: d / ITEM_IDS_FILE},
            index=tuned.to_manifest(),
            metrics={**dict(metrics or {}), "index_recall_at_100": tuned.recall_at_100},
            data_partitions=data_partitions,
            config=full_config,
            parents=parents,
            created_at=created_at,
        )
    return version, tuned


def publish_run_dir(registry: Registry, surface: str, run_dir: str | Path, **kwargs: Any) -> tuple[str, TuneResult]:
    """Publish a training run directory (model.pt + config.json, weights loaded weights_only)."""
    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    model = enc.load_weights(config["model"], str(run / MODEL_FILE))
    extra = {k: v for k, v in config.items() if k in ("kind", "data", "loss", "optim", "train", "surface")}
    kwargs.setdefault("metrics", {f"val/{k}" if not k.startswith("val/") else k: v
                                  for k, v in (config.get("best_val") or {}).items()
                                  if isinstance(v, (int, float))})
    kwargs["config"] = {"training": extra, **dict(kwargs.get("config") or {})}
    return publish_model(registry, surface, model, **kwargs)
