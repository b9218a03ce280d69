"""Training scale-out: Lightning DDP with 2 CPU processes (gloo) against one process, same
global batch and seed, both through the CLI entry point in a subprocess.

The world here is a small sequential one (users walk a ring of items: the next item is the
successor with probability 0.9), built through the event contract. It is used instead of
`SimulatedWorld` because the simulator's leave-one-out next item is popularity-dominated (on a
small world even an item-to-item transition baseline only ties popularity on HR@10), so "both
runs learned something" could not be told apart from "both runs predict popularity".
"""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from devstack.processes import free_port, stop_process_group
from events.contract import conform
from training.data import DataConfig, TrainWindows, build_sequences, leave_one_out
from training.evaluate import evaluate_popularity, evaluate_public_model
from training.train import load_config, load_model

pytestmark = pytest.mark.services  # starts processes of its own

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 16
EPOCHS = 12
# DDP and one process see the same batches per step; per-rank target draws and gradient
# averaging differ, so the two runs are not bit-identical: their quality agrees within this
NDCG_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def events(n_users: int = 120, n_items: int = 60, p_next: float = 0.9) -> pd.DataFrame:
    """Each user clicks 10-19 items on a ring: successor with probability p_next, else a random item."""
    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2026-02-01", tz="UTC")
    rows = []
    for user in range(n_users):
        item = int(rng.integers(n_items))
        for k in range(int(rng.integers(10, 20))):
            rows.append(
                {
                    "user_id": user,
                    "item_id": 1000 + item,
                    "surface": "homefeed",
                    "outcome": "click",
                    "event_ts": t0 + pd.Timedelta(seconds=3600 * user + 60 * k),
                    "session_id": user,
                }
            )
            item = (item + 1) % n_items if rng.random() < p_next else int(rng.integers(n_items))
    return conform(pd.DataFrame(rows))


def _rows(batch) -> list[tuple[int, ...]]:
    """Each window of a batch as its tuple of real input items (padding removed)."""
    return sorted(tuple(int(i) for i in row if i > 0) for row in batch["items"].tolist())


def test_rank_shards_split_every_planned_batch_into_disjoint_halves(events):
    seqs = build_sequences(events)
    cfg = DataConfig(max_len=32, batch_size=GLOBAL_BATCH)
    whole = TrainWindows(seqs, cfg)
    shards = [TrainWindows(seqs, cfg) for _ in range(2)]
    for rank, ds in enumerate(shards):
        ds.shard(rank, 2)
    for epoch in (0, 1):
        for ds in [whole, *shards]:
            ds.set_epoch(epoch)
        assert len(shards[0]) == len(shards[1]) == len(whole)  # same optimiser steps per epoch
        for i in range(len(whole)):
            parts = [ds[i] for ds in shards]
            full = whole[i]
            if len(full["items"]) == GLOBAL_BATCH:
                assert [len(p["items"]) for p in parts] == [GLOBAL_BATCH // 2] * 2
            # the two halves are exactly the planned global batch's windows
            assert sorted(_rows(parts[0]) + _rows(parts[1])) == _rows(full)
    with pytest.raises(ValueError, match="divisible"):
        TrainWindows(seqs, replace(cfg, batch_size=15)).shard(0, 2)


def _start_training(events_path: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`python -m training.train pretrain ...` in a subprocess (its own process group)."""
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "pretrain",
        "--events",
        str(events_path),
        "--out",
        str(out),
        "--split",
        "leave_one_out",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        str(GLOBAL_BATCH),
        "--lr",
        "5e-3",
        "--warmup-steps",
        "5",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--max-len",
        "32",
        "--dropout",
        "0.1",
        "--threads",
        "1",
        "--no-progress-bar",
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _finish(proc: subprocess.Popen, out: Path, timeout: float = 600) -> dict:
    """Wait for a training subprocess (the timeout only guards against a hang) -> its config.json."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
        raise
    assert proc.returncode == 0, output[-4000:]
    return load_config(out)


def test_ddp_on_two_cpu_processes_trains_to_the_quality_of_one_process(events, tmp_path):
    events_path = tmp_path / "events.parquet"
    events.to_parquet(events_path)
    runs = {
        "single": _start_training(events_path, tmp_path / "single"),
        "ddp": _start_training(events_path, tmp_path / "ddp", "--strategy", "ddp", "--devices", "2"),
    }
    try:
        single, ddp = (_finish(proc, tmp_path / name) for name, proc in runs.items())
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                stop_process_group(proc)

    assert single["distributed"]["world_size"] == 1
    assert ddp["distributed"] == {
        "world_size": 2,
        "num_nodes": 1,
        "strategy": "DDPStrategy",
        "global_batch_size": GLOBAL_BATCH,
        "per_process_batch_size": GLOBAL_BATCH // 2,
    }
    # both processes trained every epoch, and together they trained every token exactly once
    assert len(ddp["history"]) == len(single["history"]) == EPOCHS
    for one, two in zip(single["history"], ddp["history"]):
        assert len(one["tokens_per_rank"]) == 1 and len(two["tokens_per_rank"]) == 2
        assert min(two["tokens_per_rank"]) > 0
        assert sum(two["tokens_per_rank"]) == one["tokens_per_rank"][0]

    train, valid, _ = leave_one_out(build_sequences(events))
    popularity = evaluate_popularity(train, valid)["ndcg@10"]
    best = {name: run["best_val"]["val/ndcg@10"] for name, run in (("single", single), ("ddp", ddp))}
    print({"ndcg@10": best, "popularity": popularity})
    assert abs(best["ddp"] - best["single"]) <= NDCG_TOLERANCE, best
    assert min(best.values()) >= popularity + 0.5, (best, popularity)

    # the validation metric DDP logged (each process ranked half of the users, then gathered)
    # is the metric of the saved model over the whole validation set
    whole = evaluate_public_model(load_model(tmp_path / "ddp"), valid)
    assert whole["ndcg@10"] == pytest.approx(best["ddp"], abs=1e-6)
    assert whole["hr@10"] == pytest.approx(ddp["best_val"]["val/hr@10"], abs=1e-6)
    assert np.isfinite(whole["ndcg@50"])
