"""Benchmark `unified_sim`: one model retrieves and ranks (UniPinRec), on the simulated world.

Rows (every model: the same size, d_model 64, 2 layers, 2 heads, max_len 200, trained on the
same days with the same seed and epochs):

  retrieval-only  today's model (no ranking head); a slate is ordered by its retrieval scores
  two-models      retrieval by the retrieval-only model, ranking by a separately trained ranker
                  (the same architecture with a ranking head, trained on the ranking loss alone:
                  blended examples' slates and masked actions)
  unified         one model, both heads, one loss (retrieval + ranking), one encode at serving

Columns, on the held-out last day (histories as of its start, the canary's protocol,
`serving.evaluation.canary.evaluate_version`): `recall@100` (click + save queries, every surface's
engagements of the day), `slate_auc/click`, `slate_auc/save` (mean over the day's sessions'
slates of the AUC of the outcome's score), `slate_ndcg@10` (the slates ranked by the combined
score, click + save weights, gain 1 per engaged item); `mflop_per_request`: model FLOPs of
retrieving 200 and ranking them, mean over the held-out day's users (their own history lengths;
the notes give it for a full 200-event history too): retrieval-only = encode + queries;
two-models = that + the ranker's own encode of the history + its ranking head over 200;
unified = encode + queries + ranking head (the keys/values of the one encode reused);
`p50_ms` and `qps`: 8 client threads in a closed loop against a micro-batcher
(`serving.service.batcher.MicroBatcher`, the service's own) whose batches run retrieve 200 + rank
(unified: `LoadedVersion.recommend_batch`; two-models: `retrieve_batch` of the retrieval model,
then the ranker's encode and ranking head; retrieval-only: `retrieve_batch` of 200), encoder
states off (every request encodes its history in full), in process (no HTTP, no feature store:
the same for every row); `train_seconds`: pretraining wall time (two-models: both models).

    PYTHONPATH=. .venv/bin/python -m benchmarks.unified_sim                   # full (write results)
    PYTHONPATH=. .venv/bin/python -m benchmarks.unified_sim --quick --no-write  # smoke
    PYTHONPATH=. .venv/bin/python -m benchmarks.unified_sim --timing-only     # reuse trained models

Targets: unified slate AUC (click, save) >= two-models' - 0.005; unified recall@100 >= 0.99 x
retrieval-only's; unified mflop_per_request <= 0.7 x two-models'; unified qps >= 1.3 x
two-models'.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.results import argument_parser, print_table, write_results
from events.contract import BUILTIN_CODES
from serving.evaluation.canary import evaluate_version
from serving.registry.index import build_tuned_index
from serving.service import encoder as enc
from serving.service.batcher import MicroBatcher
from serving.service.retriever import LoadedVersion, RecommendRequest, RetrievalRequest
from training.data import DataConfig
from training.model import PinRecConfig, encode_flops, query_flops, rank_flops
from training.module import OptimConfig
from training.ranking import RankingConfig, rank_outcomes_for
from training.train import TrainConfig, load_model, pretrain
from world.simulator import SimulatedWorld, SimulatorConfig

NAME = "unified_sim"
WORK = Path("var/bench") / NAME
N_CANDIDATES = 200
K = 100
CLIENTS = 8
WEIGHTS = {"click": 1.0, "save": 1.0}


def _world(a) -> SimulatorConfig:
    if a.quick:
        cfg = SimulatorConfig(seed=0, n_users=200, n_items=600, n_topics=8, events_per_day=6000, n_days=5)
    else:
        cfg = SimulatorConfig(seed=0, n_users=1000, n_items=3000, n_topics=20, events_per_day=40_000, n_days=12)
    changes = {
        k: v
        for k, v in (("n_users", a.users), ("n_items", a.items), ("events_per_day", a.events), ("n_days", a.days))
        if v
    }
    return replace(cfg, **changes)


def _loaded(model, surface: str = "homefeed", name: str = "v") -> LoadedVersion:
    vectors, ids = enc.item_table(model)
    index, _ = build_tuned_index(vectors)
    files = {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}
    return LoadedVersion(surface, name, {"files": files}, model, index, ids)


def _sequences(events: pd.DataFrame) -> dict[int, enc.UserSequence]:
    """Each user's events as the online store would hold them at the held-out day's start."""
    ev = events.sort_values("event_ts", kind="stable")
    oc = ev["outcome"].map(BUILTIN_CODES.outcome_code).to_numpy(np.int64)
    sc = ev["surface"].map(BUILTIN_CODES.surface_code).to_numpy(np.int64)
    ts = ev["event_ts"].to_numpy("datetime64[us]").astype(np.int64)
    items, users = ev["item_id"].to_numpy(np.int64), ev["user_id"].to_numpy(np.int64)
    out = {}
    order = np.argsort(users, kind="stable")
    bounds = np.r_[0, np.nonzero(np.diff(users[order]))[0] + 1, len(order)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        rows = order[a:b]
        keep = oc[rows] != BUILTIN_CODES.impression_code  # the feature keeps engagements and negatives
        rows = rows[keep][-200:]
        out[int(users[order[a]])] = enc.UserSequence(items[rows], oc[rows], sc[rows], ts[rows])
    return out


class TwoModels:
    """Retrieval by one model, ranking by another: the ranker encodes the history again."""

    def __init__(self, retrieval: LoadedVersion, ranker: LoadedVersion) -> None:
        self.retrieval, self.ranker = retrieval, ranker

    def recommend_batch(self, requests: list[RecommendRequest]) -> list[list[int]]:
        found = self.retrieval.retrieve_batch([RetrievalRequest(r.sequence, N_CANDIDATES, WEIGHTS) for r in requests])
        enc_k = self.ranker.encoder
        windows = [enc_k.window(r.sequence) for r in requests]
        h, _, _, _, caches = enc_k.encode_with_cache(windows, [None] * len(requests), keep_states=False)
        index = [enc_k.to_index(np.array([c.item for c in f.candidates], np.int64)) for f in found]
        surface = BUILTIN_CODES.surface_code["homefeed"]
        probs, _ = enc_k.rank(caches, h, index, [surface] * len(requests))
        w = np.array([WEIGHTS.get(o, 0.0) for o in enc_k.rank_outcomes])
        out = []
        for f, p, r in zip(found, probs, requests):
            order = np.argsort(-(p @ w), kind="stable")[: r.k]
            out.append([f.candidates[j].item for j in order.tolist()])
        return out


def _flops(models: dict, sequences: list[enc.UserSequence]) -> dict[str, float]:
    """Mean model FLOPs of retrieve 200 + rank 200 per request (histories as given)."""
    retr, ranker, uni = models["retrieval-only"], models["ranker"], models["unified"]
    encoder = enc.Encoder(retr)
    n_queries = len(encoder.budget(WEIGHTS))
    out: dict[str, list[float]] = {"retrieval-only": [], "two-models": [], "unified": []}
    for seq in sequences:
        n = len(encoder.window(seq))
        retrieve = encode_flops(retr.cfg, n) + query_flops(retr.cfg, n_queries)
        out["retrieval-only"].append(retrieve)
        out["two-models"].append(retrieve + encode_flops(ranker.cfg, n) + rank_flops(ranker.cfg, N_CANDIDATES, n))
        out["unified"].append(
            encode_flops(uni.cfg, n) + query_flops(uni.cfg, n_queries) + rank_flops(uni.cfg, N_CANDIDATES, n)
        )
    return {k: float(np.mean(v)) / 1e6 for k, v in out.items()}


def _timed(process, requests: list, seconds: float, threads: int) -> dict[str, float]:
    """CLIENTS threads in a closed loop through a micro-batcher: p50 latency and requests/s."""
    torch.set_num_threads(threads)
    batcher = MicroBatcher(
        lambda jobs: process([j.item for j in jobs]), max_wait_ms=2.0, max_batch=64, name="unified-bench"
    )
    batcher.start()
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = [0.0]

    def client(c: int) -> None:
        i = c
        while time.perf_counter() < stop_at[0]:
            done = threading.Event()
            t0 = time.perf_counter()
            batcher.submit(requests[i % len(requests)], lambda _, done=done: done.set())
            done.wait()
            with lock:
                latencies.append(time.perf_counter() - t0)
            i += CLIENTS

    for phase in ("warmup", "measure"):
        latencies.clear()
        stop_at[0] = time.perf_counter() + (min(5.0, seconds) if phase == "warmup" else seconds)
        t0 = time.perf_counter()
        workers = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
    batcher.stop()
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 2),
        "qps": round(len(latencies) / wall, 1),
        "mean_batch": round(batcher.jobs / max(batcher.batches, 1), 1),
    }


def main() -> int:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--quick", action="store_true", help="a small world and short runs (smoke)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--users", type=int, default=0, help="world size overrides (0: the default world's)")
    p.add_argument("--items", type=int, default=0)
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--days", type=int, default=0)
    p.add_argument("--out", default="", help="run folder under var/bench/unified_sim (default quick / full)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per timed row")
    p.add_argument("--timing-only", action="store_true", help="reuse the trained models under var/bench")
    p.add_argument("--skip-timing", action="store_true", help="quality and FLOPs only (a shared machine)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--context", default="", help="what else ran on the machine (goes into the notes)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    wcfg = _world(a)
    world = SimulatedWorld(wcfg)
    days = world.days()
    events = pd.concat([world.day(d) for d in days], ignore_index=True)
    held_out = days[-1]
    train_ev = events[events["event_ts"].dt.date < held_out]
    day_ev = events[events["event_ts"].dt.date == held_out]
    out = WORK / (a.out or ("quick" if a.quick else "full"))
    base = PinRecConfig(n_items=0, d_model=64, n_layers=2, n_heads=2, max_len=200, dropout=0.2)
    ranked = rank_outcomes_for(BUILTIN_CODES)
    epochs = 3 if a.quick else a.epochs
    plan = {  # name -> (model config, ranking config)
        "retrieval-only": (base, None),
        "ranker": (replace(base, rank_outcomes=ranked), RankingConfig(retrieval_weight=0.0)),
        "unified": (replace(base, rank_outcomes=ranked), RankingConfig()),
    }
    models, seconds = {}, {}
    for name, (mcfg, rcfg) in plan.items():
        run = out / name
        if a.timing_only:
            models[name] = load_model(run)
            seconds[name] = json.loads((run / "config.json").read_text())["train_seconds"]
            continue
        shutil.rmtree(run, ignore_errors=True)  # a fresh run (pretrain would resume a finished one)
        t0 = time.perf_counter()
        result = pretrain(
            train_ev,
            run,
            mcfg,
            DataConfig(batch_size=a.batch_size, seed=0),
            optim_cfg=OptimConfig(lr=2e-3, warmup_steps=20),
            train_cfg=TrainConfig(max_epochs=epochs, progress_bar=False, threads=a.threads, seed=0),
            rank_cfg=rcfg,
        )
        models[name], seconds[name] = result.model, time.perf_counter() - t0
        print(json.dumps({"trained": name, "seconds": round(seconds[name], 1), "ranking": result.ranking}), flush=True)

    sequences = _sequences(train_ev)
    loaded = {name: _loaded(m) for name, m in models.items()}
    quality = {}
    for name in ("retrieval-only", "ranker", "unified"):
        quality[name] = evaluate_version(
            loaded[name], sequences, day_ev, k=K, outcome_weights=WEIGHTS, impression=BUILTIN_CODES.impression
        )
        print(json.dumps({"evaluated": name, **{k: round(v, 4) for k, v in quality[name].items()}}), flush=True)
    users = sorted(set(day_ev.loc[day_ev["outcome"].isin(["click", "save"]), "user_id"]))
    request_seqs = [sequences.get(u, enc.UserSequence.empty()) for u in users]
    flops = _flops(models, request_seqs)
    full_history = _flops(
        models,
        [
            enc.UserSequence(
                np.tile(models["unified"].item_ids[1:201].numpy(), 1),
                np.full(200, BUILTIN_CODES.outcome_code["click"]),
                np.zeros(200, np.int64),
                np.arange(200, dtype=np.int64) * 10**6,
            )
        ],
    )
    rows = []
    for name, q_from, r_from in (
        ("retrieval-only", "retrieval-only", "retrieval-only"),
        ("two-models", "retrieval-only", "ranker"),
        ("unified", "unified", "unified"),
    ):
        rows.append(
            {
                "name": name,
                "recall@100": round(quality[q_from][f"recall@{K}"], 4),
                "slate_auc/click": round(quality[r_from]["slate_auc/click"], 4),
                "slate_auc/save": round(quality[r_from]["slate_auc/save"], 4),
                "slate_ndcg@10": round(quality[r_from]["slate_ndcg@10"], 4),
                "mflop_per_request": round(flops[name], 2),
                "train_seconds": round(
                    seconds["retrieval-only"] + seconds["ranker"] if name == "two-models" else seconds[name], 1
                ),
            }
        )
    if not a.skip_timing:
        requests = [RecommendRequest(s, 20, WEIGHTS) for s in request_seqs]
        two = TwoModels(loaded["retrieval-only"], loaded["ranker"])
        timed = {
            "retrieval-only": lambda reqs: loaded["retrieval-only"].retrieve_batch(
                [RetrievalRequest(r.sequence, N_CANDIDATES, WEIGHTS) for r in reqs]
            ),
            "two-models": two.recommend_batch,
            "unified": lambda reqs: loaded["unified"].recommend_batch(reqs, None, N_CANDIDATES),
        }
        for row in rows:
            figures = _timed(timed[row["name"]], requests, 5.0 if a.quick else a.seconds, a.threads)
            row.update({"p50_ms": figures["p50_ms"], "qps": figures["qps"]})
            print(json.dumps({"timed": row["name"], **figures}), flush=True)
    print_table(rows)
    by = {r["name"]: r for r in rows}
    targets_row = {
        "name": "targets",
        "auc_click_unified_minus_two_models": round(
            by["unified"]["slate_auc/click"] - by["two-models"]["slate_auc/click"], 4
        ),
        "auc_save_unified_minus_two_models": round(
            by["unified"]["slate_auc/save"] - by["two-models"]["slate_auc/save"], 4
        ),
        "recall_unified_over_retrieval_only": round(
            by["unified"]["recall@100"] / by["retrieval-only"]["recall@100"], 4
        ),
        "mflop_unified_over_two_models": round(
            by["unified"]["mflop_per_request"] / by["two-models"]["mflop_per_request"], 4
        ),
    }
    if "qps" in by["unified"]:
        targets_row["qps_unified_over_two_models"] = round(by["unified"]["qps"] / by["two-models"]["qps"], 4)
    print_table([targets_row])
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    notes = (
        f"Simulated world {json.dumps(wcfg.to_dict())}; trained on every day but the last ({epochs} epochs, "
        f"batch {a.batch_size}, lr 2e-3, full softmax), evaluated on the last day with histories as of its start "
        f"({len(users)} users with an engagement, {int(quality['unified']['slates'])} slates). Parameters: "
        f"{json.dumps(params)} (two-models = retrieval-only + ranker). mflop_per_request for a full 200-event "
        f"history: {json.dumps({k: round(v, 2) for k, v in full_history.items()})}. Timed rows: "
        f"{CLIENTS} client threads, {a.threads} torch threads, encoder states off, in process. {a.context}"
    )
    if not a.no_write:
        write_results(
            NAME,
            rows + [targets_row],
            {
                "targets/auc_click_unified_minus_two_models": -0.005,
                "targets/auc_save_unified_minus_two_models": -0.005,
                "targets/recall_unified_over_retrieval_only": 0.99,
                "targets/mflop_unified_over_two_models": 0.7,
                "targets/qps_unified_over_two_models": 1.3,
            },
            notes=notes,
            lower_is_better={"mflop_unified_over_two_models", "mflop_per_request", "p50_ms", "train_seconds"},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
