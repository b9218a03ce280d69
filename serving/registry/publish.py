"""Publish a model as a version: item table -> tuned faiss index -> files -> registry.

``publish_model(registry, surface, model, ...)`` builds the index from the model's item
embeddings (``serving.registry.index.build_tuned_index``: type by catalogue size, tuned to recall@100 >=
0.98 against exact search), writes ``model.pt`` (state_dict only), ``index.faiss`` and
``item_ids.npy`` (row -> contract item id) to a temporary directory and hands them to
``Registry.publish``, which uploads them and writes the manifest last. The manifest's
``config`` holds ``model`` (the PinRecConfig, needed to load the weights), ``serving`` (default
outcome weights) and whatever the caller adds; ``index`` holds kind, search parameters and the
measured recall; ``vocabulary`` the codes of the model's outcomes and surfaces, its engaged
outcomes and, when the caller passes the deployment's vocabulary, its file (so serving can refuse
a version whose codes disagree with the features it reads).

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

from serving.registry.index import TARGET_RECALL, TuneResult, build_tuned_index, write_index
from serving.registry.manifest import INDEX_FILE, ITEM_IDS_FILE, MODEL_FILE
from serving.registry.store import Registry
from serving.service import encoder as enc


def user_queries(
    model: Any,
    sequences: Sequence[enc.UserSequence],
    outcome_weights: Mapping[str, float] | None = None,
    limit: int = 500,
    engaged_codes: Sequence[int] | None = None,
) -> np.ndarray | None:
    """(n, d) queries the model generates for real users' sequences (every (outcome, offset) of
    the default budget): what an index should be tuned on, rather than item vectors plus noise.
    `engaged_codes`: the outcomes that are model inputs (the vocabulary's; default the built-in
    data's). None when no sequence is usable."""
    encoder = enc.Encoder(model, engaged_codes)
    budget = encoder.budget(dict(outcome_weights or enc.DEFAULT_OUTCOME_WEIGHTS))
    usable = [s for s in sequences if len(s)][:limit]
    if not usable:
        return None
    return np.concatenate([encoder.queries(s, budget) for s in usable]).astype(np.float32)


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
    vocabulary: Any | None = None,
    index_shards: int = 1,
) -> tuple[str, TuneResult]:
    """Build, tune and publish; returns (version id, tuning result). `vocabulary`
    (`events.vocabulary.Vocabulary`): the deployment's, whose default weights for `surface` the
    version serves with (unless `outcome_weights`) and whose record goes into the manifest.
    ``index_shards`` > 1: a sharded index (`serving.registry.shards`, still the one file ``index.faiss``)."""
    vectors, item_ids = enc.item_table(model)
    index, tuned = build_tuned_index(
        vectors, index_kind, queries=tune_queries, target_recall=target_recall, shards=index_shards
    )
    if vocabulary is not None:
        codes = vocabulary.codes.for_model(model.cfg.outcomes, model.cfg.surfaces)
        record = {**vocabulary.record(), **codes.mapping(), "engaged": list(codes.engaged)}
        weights = dict(outcome_weights or vocabulary.weights_for(surface))
    else:
        codes = enc.model_codes(model)
        record = {**codes.mapping(), "engaged": list(codes.engaged)}
        weights = dict(outcome_weights or enc.DEFAULT_OUTCOME_WEIGHTS)
    enc.check_outcomes(weights, codes.engaged)
    full_config = {
        **dict(config or {}),
        "model": enc.model_config(model),
        "serving": {"outcome_weights": weights},
        "vocabulary": record,
    }
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
    kwargs.setdefault(
        "metrics",
        {
            f"val/{k}" if not k.startswith("val/") else k: v
            for k, v in (config.get("best_val") or {}).items()
            if isinstance(v, (int, float))
        },
    )
    kwargs["config"] = {"training": extra, **dict(kwargs.get("config") or {})}
    return publish_model(registry, surface, model, **kwargs)
