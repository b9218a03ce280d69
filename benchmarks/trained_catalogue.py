"""A PinRec trained on a large simulated catalogue, for ANN figures on learned embeddings.

    catalogue = trained_catalogue(log)            # trains once (a few minutes), then reloads
    catalogue.item_vectors                        # (V, d) the index's vectors, V >= 10^5
    catalogue.queries(users)                      # (U * 8, d) the served queries of those users

The world: ``WORLD`` (``world.simulator``, its rules unchanged: 20k users, 200k items in 200
topics, 4 days of 500k events; every item that appears, impressions included, is in the
vocabulary, as in production training). The model: d=64, 2 layers, trained by
``training.train.pretrain`` with sampled softmax (in-batch + uniform negatives with logQ, the
setting for a catalogue this size) for at most ``TRAIN_SECONDS`` of wall time. Items that were
only ever impressed are trained as negatives only, as in a real catalogue's long tail.

The trained model is cached under ``var/bench-cache/trained-catalogue-<key>/`` (``model.pt`` +
``config.json``, ``training.train``'s format), keyed by the world and training settings, so the
benchmark trains once per machine; ``--retrain`` in ``benchmarks.serving`` ignores the cache.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training.data import DataConfig, Sequences, build_sequences, input_batch, last_window_index
from training.loss import LossConfig
from training.model import PinRec, PinRecConfig
from training.module import OptimConfig
from training.train import TrainConfig, load_model, pretrain
from world.simulator import SimulatedWorld, SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "var" / "bench-cache"
WORLD = SimulatorConfig(
    seed=7,
    n_users=20_000,
    n_items=200_000,
    n_topics=200,
    events_per_day=500_000,
    start_date=dt.date(2026, 1, 1),
    n_days=4,
)
MODEL = PinRecConfig(n_items=1, d_model=64, n_layers=2, n_heads=2, max_len=50, dropout=0.1)
TRAIN_SECONDS = 180.0
BUDGET = [(o, f) for o in ("click", "save") for f in ("next", "session", "day", "week")]


@dataclass
class TrainedCatalogue:
    model: PinRec
    events: pd.DataFrame
    train_seconds: float
    epochs: int

    @property
    def item_vectors(self) -> np.ndarray:
        """(V, d) L2-normalised item vectors: what ``serving.registry.publish`` indexes."""
        with torch.no_grad():
            return np.ascontiguousarray(self.model.item_embeddings()[1:].numpy(), dtype=np.float32)

    @cached_property
    def sequences(self) -> Sequences:
        """The users' engagement sequences over the model's vocabulary."""
        return build_sequences(self.events, self.model.item_ids.numpy())

    @property
    def n_users(self) -> int:
        return self.sequences.n_users

    def queries(self, users: np.ndarray) -> np.ndarray:
        """The queries the service would send for these users (positions in ``sequences``):
        their last ``max_len`` engagements, one query per (click/save, offset)."""
        seqs = self.sequences
        idx = last_window_index(seqs, self.model.cfg.max_len, users)
        with torch.inference_mode():
            q = self.model.generate_queries(input_batch(seqs, idx), BUDGET)["queries"]  # (U, 8, d)
        return np.ascontiguousarray(q.reshape(-1, q.shape[-1]).numpy(), dtype=np.float32)


def _key() -> str:
    settings = {"world": asdict(WORLD), "model": asdict(MODEL), "seconds": TRAIN_SECONDS, "v": 1}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def world_events() -> pd.DataFrame:
    world = SimulatedWorld(WORLD)
    return pd.concat([world.day(d) for d in world.days()], ignore_index=True)


def trained_catalogue(
    log: Callable[[str], None] = print, retrain: bool = False, cache_dir: Path = CACHE_DIR
) -> TrainedCatalogue:
    t0 = time.perf_counter()
    events = world_events()
    log(f"trained catalogue: simulated {len(events):,} events in {time.perf_counter() - t0:.1f}s")
    out = cache_dir / f"trained-catalogue-{_key()}"
    if retrain and out.exists():
        shutil.rmtree(out)
    if not (out / "model.pt").exists():
        log(f"trained catalogue: training for at most {TRAIN_SECONDS:.0f}s -> {out}")
        result = pretrain(
            events,
            out / "run",
            MODEL,
            DataConfig(batch_size=256),
            LossConfig(full_softmax=False),
            OptimConfig(lr=2e-3, warmup_steps=50, schedule="cosine_time"),
            TrainConfig(max_epochs=50, max_time_s=TRAIN_SECONDS, progress_bar=False),
        )
        for name in ("model.pt", "config.json"):
            shutil.copy(out / "run" / name, out / name)
        shutil.rmtree(out / "run", ignore_errors=True)
        log(f"trained catalogue: {result.epochs} epochs in {result.train_seconds:.0f}s")
    model = load_model(out).eval()
    config = json.loads((out / "config.json").read_text())
    return TrainedCatalogue(model, events, float(config["train_seconds"]), int(config["epochs"]))
