"""The harness's model rows: trained with the lifecycle's recipe on the log's training days,
cached on disk, served through `LoadedVersion` (`policies.ModelPolicy`).

The recipe is `training.plan.TrainingPlan` as the lifecycle uses it (assets/lifecycle/pretrain.py:
pretrain on every surface's events of the days before; finetune.py: per surface, the last
``finetune_days`` days, ``hard_negatives`` impressed-but-not-engaged items, ``finetune_epochs``).
Rows (benchmarks/ablations_sim.py has the ladder's meaning):

  sasrec        every PinRec switch off (item ids only, one "next" query, no logQ, no exposure
                term, no search query), as the live runner's SASRec arm; pretrained only, one
                model for every surface
  uc            unconditioned: one "any outcome" query, single token; pretrained only
  oc            outcome-conditioned, single token; pretrained only
  oc-mt         outcome-conditioned, multi-token; pretrained only
  oc-mt-ft      oc-mt fine-tuned per surface
  pinrec        the lifecycle's recipe as it is (ranking head trained beside, fine-tuned per
                surface), served by /v1/retrieve with the version's default weights
  unipinrec     the pinrec models through /v1/recommend: 200 retrieved, ranked by the head
  pinrec-save0  pinrec with outcome weights click 1, save 0
  pinrec-save1  pinrec with outcome weights click 0, save 1

Ablation rows (``ABLATION_ROWS``, run when named): uc with one switch of sasrec's turned off:
``uc-nologq`` (no logQ correction), ``uc-noexp`` (no exposure term), ``uc-noside`` (no
outcome/surface/time input features).

A trained model is kept under ``cache_dir/<variant>-<key>/`` where the key hashes the plan, the
variant's changes, the fine-tuning surface and the training log's contents: a re-run with the
same log and recipe loads it instead of training.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from events.contract import SURFACES
from serving.registry.index import build_tuned_index
from serving.service import encoder as enc
from serving.service.retriever import LoadedVersion
from training.plan import TrainingPlan
from training.train import fine_tune, load_model, pretrain
from world.policy_loop.harness import LogRun
from world.policy_loop.policies import ModelPolicy

MODEL_ROWS = ("sasrec", "uc", "oc", "oc-mt", "oc-mt-ft", "pinrec", "unipinrec", "pinrec-save0", "pinrec-save1")
# rows a run names with --rows (not in the default set): the steps between sasrec and uc, one switch each
ABLATION_ROWS = ("uc-nologq", "uc-noexp", "uc-noside")
# pretrained variant -> (model switches, data switches, loss switches, ranking head)
_VARIANTS: dict[str, tuple[dict, dict, dict, bool]] = {
    "sasrec": (
        {
            "outcome_conditioning": False,
            "multi_token": False,
            "side_inputs": False,
            "n_queries": 0,
            "exposure_bias": False,
        },
        {"outcome_conditioning": False},
        {"logq": False},
        False,
    ),
    "uc": ({"outcome_conditioning": False, "multi_token": False}, {}, {}, False),
    "uc-nologq": ({"outcome_conditioning": False, "multi_token": False}, {}, {"logq": False}, False),
    "uc-noexp": ({"outcome_conditioning": False, "multi_token": False, "exposure_bias": False}, {}, {}, False),
    "uc-noside": ({"outcome_conditioning": False, "multi_token": False, "side_inputs": False}, {}, {}, False),
    "oc": ({"outcome_conditioning": True, "multi_token": False}, {}, {}, False),
    "oc-mt": ({"outcome_conditioning": True, "multi_token": True}, {}, {}, False),
    "pinrec": ({}, {}, {}, True),
}
# row -> (pretrained variant, fine-tuned per surface, outcome weights, endpoint)
_ROWS: dict[str, tuple[str, bool, dict | None, str]] = {
    "sasrec": ("sasrec", False, None, "/v1/retrieve"),
    "uc": ("uc", False, None, "/v1/retrieve"),
    "uc-nologq": ("uc-nologq", False, None, "/v1/retrieve"),
    "uc-noexp": ("uc-noexp", False, None, "/v1/retrieve"),
    "uc-noside": ("uc-noside", False, None, "/v1/retrieve"),
    "oc": ("oc", False, None, "/v1/retrieve"),
    "oc-mt": ("oc-mt", False, None, "/v1/retrieve"),
    "oc-mt-ft": ("oc-mt", True, None, "/v1/retrieve"),
    "pinrec": ("pinrec", True, None, "/v1/retrieve"),
    "unipinrec": ("pinrec", True, None, "/v1/recommend"),
    "pinrec-save0": ("pinrec", True, {"click": 1.0, "save": 0.0}, "/v1/retrieve"),
    "pinrec-save1": ("pinrec", True, {"click": 0.0, "save": 1.0}, "/v1/retrieve"),
}
DONE = "harness_done.json"


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a frame's contents (row hashes, in order)."""
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.blake2b(rows.tobytes(), digest_size=8).hexdigest()


def _key(*parts: object) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def loaded_version(model, surface: str, name: str) -> LoadedVersion:
    """A trained model as the service loads a published version (model, tuned faiss index, ids)."""
    vectors, ids = enc.item_table(model)
    index, _ = build_tuned_index(vectors)
    files = {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}
    return LoadedVersion(surface, name, {"files": files}, model, index, ids)


class ModelTrainer:
    """Trains (or loads from the cache) the pretrained and fine-tuned models of the rows."""

    def __init__(self, run: LogRun, cache_dir: str | Path, plan: TrainingPlan | None = None) -> None:
        self.run, self.plan = run, plan or TrainingPlan()
        self.cache_dir = Path(cache_dir)
        self.data_key = frame_digest(run.train_events)
        self.seconds: dict[str, float] = {}  # training wall time per model (0: from the cache)

    def _cached(self, name: str, key: str, train) -> Path:
        out = self.cache_dir / f"{name}-{key}"
        if (out / DONE).exists():
            self.seconds.setdefault(name, 0.0)  # trained earlier in this run, or loaded
            return out
        t0 = time.perf_counter()
        train(out)
        self.seconds[name] = time.perf_counter() - t0
        (out / DONE).write_text(json.dumps({"seconds": self.seconds[name]}))
        return out

    def _configs(self, variant: str):
        model_sw, data_sw, loss_sw, ranking = _VARIANTS[variant]
        model_cfg, data_cfg, loss_cfg, train_cfg = self.plan.configs()
        model_cfg = replace(model_cfg, **model_sw)
        if not ranking:
            model_cfg = replace(model_cfg, rank_outcomes=())
        return model_cfg, replace(data_cfg, **data_sw), replace(loss_cfg, **loss_sw), train_cfg, ranking

    def pretrained(self, variant: str) -> Path:
        model_cfg, data_cfg, loss_cfg, train_cfg, ranking = self._configs(variant)
        key = _key("pretrain", self.plan.to_dict(), _VARIANTS[variant], self.data_key)
        rank_cfg = self.plan.ranking_config() if ranking else None
        return self._cached(
            variant,
            key,
            lambda out: pretrain(
                self.run.train_events,
                out,
                model_cfg,
                data_cfg,
                loss_cfg,
                self.plan.optim_config("pretrain"),
                train_cfg,
                rank_cfg=rank_cfg,
            ),
        )

    def finetuned(self, variant: str, surface: str, seed: int | None = None) -> Path:
        """The fine-tuned model of `surface`; `seed`: fine-tuned again from the same pretrained
        model and data with another seed (a candidate retrained from the champion's data)."""
        base = self.pretrained(variant)
        _, data_cfg, loss_cfg, train_cfg, ranking = self._configs(variant)
        train_cfg = self.plan.finetune_train_config(train_cfg)
        name, parts = f"{variant}-ft-{surface}", ()
        if seed is not None:
            data_cfg, train_cfg = replace(data_cfg, seed=seed), replace(train_cfg, seed=seed)
            name, parts = f"{name}-seed{seed}", (seed,)
        days = self.run.train_days[-self.plan.finetune_days :]
        ev = self.run.train_events
        events = ev[ev["event_ts"].dt.date >= days[0]]
        key = _key("finetune", base.name, surface, self.plan.to_dict(), frame_digest(events), *parts)
        rank_cfg = self.plan.ranking_config() if ranking else None
        return self._cached(
            name,
            key,
            lambda out: fine_tune(
                events,
                surface,
                base,
                out,
                data_cfg,
                loss_cfg,
                self.plan.optim_config("finetune"),
                train_cfg,
                n_hard=self.plan.hard_negatives,
                rank_cfg=rank_cfg,
            ),
        )

    def policy(self, row: str) -> ModelPolicy:
        """The row's policy (module docstring), its models trained or loaded."""
        if row not in _ROWS:
            raise ValueError(f"unknown model row {row!r}; rows: {', '.join(MODEL_ROWS)}")
        variant, tuned, weights, endpoint = _ROWS[row]
        versions = {}
        if tuned:
            for s in SURFACES:
                versions[s] = loaded_version(load_model(self.finetuned(variant, s)), s, f"{variant}-ft-{s}")
        else:
            model = load_model(self.pretrained(variant))
            versions = {s: loaded_version(model, s, variant) for s in SURFACES}
        return ModelPolicy(row, versions, weights, endpoint)


def model_policies(run: LogRun, rows: list[str], cache_dir: str | Path, plan: TrainingPlan | None = None):
    """{row: ModelPolicy} for the model rows among `rows`, and the trainer (its `seconds`)."""
    trainer = ModelTrainer(run, cache_dir, plan)
    loaded: dict[tuple, dict] = {}
    out = {}
    for row in rows:
        if row not in _ROWS:
            continue
        variant, tuned, weights, endpoint = _ROWS[row]
        if (variant, tuned) not in loaded:  # rows over the same models share their loaded versions
            loaded[(variant, tuned)] = trainer.policy(row).versions
        out[row] = ModelPolicy(row, loaded[(variant, tuned)], weights, endpoint)
    return out, trainer
