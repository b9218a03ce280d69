"""Benchmark `load`: the retrieval service under sustained concurrent load with a champion swap.

    nice -n 15 .venv/bin/python -m benchmarks.load                 # 16 clients, 60 s (~2 min)
    nice -n 19 .venv/bin/python -m benchmarks.load --seconds 5 --out-name load_smoke   # smoke

Two PinRec versions (random weights, ``--items`` items, d=64, 2 layers) are published to a real
SeaweedFS and the first is promoted; ``python -m serving.service.cli serve`` (uvicorn, 127.0.0.1,
micro-batching and encoder states with their defaults, 1 faiss + 1 torch thread, pointer polling
every second, user sequences from each request's ``recent_events``: 20 events) serves it.
``--concurrency`` closed-loop clients (``benchmarks.loadgen``: one asyncio process, keep-alive
connections) send retrieve requests (k=100) back to back for ``--seconds``; half way through the
second version is promoted and the service hot-swaps to it (dropping the first one's encoder
states).

Row ``c{concurrency}-{seconds}s-swap`` (``c16-60s-swap`` by default): ``requests``, ``errors``
(any answer other than 200, and any dropped connection), ``p50_ms``, ``p99_ms`` (client-observed),
``qps``, ``mean_batch``, requests answered by each version (``v1_requests``, ``v2_requests``),
``swap_s``: seconds from the promotion to the first answer from the new version, and
``client_cpu``: the load generator's CPU time over the wall time (1.0 = one core). Target:
``errors`` = 0. Writes ``benchmarks/results/<out-name>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.loadgen import LoadResult, closed_loop
from benchmarks.results import argument_parser, print_table, write_results
from devstack.processes import stop_process_group
from devstack.service import start_cli_service

TARGETS = {"errors": 0}
RECENT_EVENTS = 20
T0_US = 1_767_000_000_000_000


def request_bodies(n_users: int, n_items: int, seed: int = 5) -> list[bytes]:
    """One retrieve request per user, each carrying its own recent history."""
    rng = np.random.default_rng(seed)
    bodies = []
    for user in range(n_users):
        items = rng.integers(1, n_items + 1, RECENT_EVENTS).tolist()
        events = [
            {
                "item_id": item,
                "outcome": "click" if i % 5 else "save",
                "timestamp_us": T0_US + (user * RECENT_EVENTS + i) * 60_000_000,
            }
            for i, item in enumerate(items)
        ]
        bodies.append(json.dumps({"user_id": user, "surface": "homefeed", "k": 100, "recent_events": events}).encode())
    return bodies


VERSION_RE = re.compile(rb'"version": "([^"]+)"')


def summarize(name: str, result: LoadResult, v1: str, v2: str, swapped_at: float) -> dict:
    outcomes = []
    for reply in result.replies:
        if reply.status == 200:
            found = VERSION_RE.search(reply.body)
            outcomes.append(found.group(1).decode() if found else "no version in the answer")
        else:
            outcomes.append(f"status {reply.status}" if reply.status else f"error {reply.error.split(':')[0]}")
    versions = Counter(outcomes)
    errors = sum(n for outcome, n in versions.items() if outcome not in (v1, v2))
    ms = np.array([r.latency_s for r in result.replies]) * 1e3
    first_v2 = min((r.end_s for r, o in zip(result.replies, outcomes) if o == v2), default=None)
    batches = [int(r.headers["x-batch-size"]) for r in result.replies if "x-batch-size" in r.headers]
    return {
        "name": name,
        "requests": len(result.replies),
        "errors": errors,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "qps": round(result.qps, 1),
        "mean_batch": round(float(np.mean(batches)), 2) if batches else None,
        "v1_requests": versions[v1],
        "v2_requests": versions[v2],
        "swap_s": round(first_v2 - swapped_at, 2) if first_v2 is not None else None,
        "client_cpu": round(result.cpu_share, 3),
        "error_kinds": {k: n for k, n in versions.items() if k not in (v1, v2)},
    }


def publish_two(registry, n_items: int) -> tuple[str, str]:
    import torch

    from serving.registry.publish import publish_model
    from training.model import PinRec, PinRecConfig

    versions = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = PinRec(
            PinRecConfig(n_items=n_items, d_model=64, n_layers=2, n_heads=2, max_len=200, dropout=0.0)
        ).eval()
        versions.append(publish_model(registry, "homefeed", model)[0])
    return versions[0], versions[1]


def run(seconds: float, concurrency: int, n_items: int, log) -> tuple[dict, str]:
    from devstack.seaweedfs import SeaweedFS
    from serving.service.checks import checked_registry

    work = Path(tempfile.mkdtemp(prefix="pinrec-bench-load-"))
    try:
        with SeaweedFS(work / "seaweedfs") as s3:
            registry = checked_registry(s3.settings().with_prefix("load"))
            v1, v2 = publish_two(registry, n_items)
            registry.promote("homefeed", v1)
            log(f"published {v1} (champion) and {v2}")
            env = {**os.environ, **s3.env(), "PINREC_S3_PREFIX": "load"}
            proc, port = start_cli_service(
                env,
                ["homefeed"],
                work / "cache",
                "--features",
                "none",
                "--poll-interval",
                "1",
                "--log-level",
                "warning",
                log_path=work / "service.log",
            )
            try:
                bodies = request_bodies(2000, n_items)
                log(
                    f"service ready on 127.0.0.1:{port}; {concurrency} clients for {seconds:g} s, "
                    f"swap to {v2} at {seconds / 2:g} s"
                )

                def promote() -> None:
                    registry.promote("homefeed", v2)

                result = closed_loop(
                    "127.0.0.1", port, bodies, concurrency, seconds=seconds, at=[(seconds / 2, promote)], timeout=30
                )
            finally:
                stop_process_group(proc)
            name = f"c{concurrency}-{seconds:g}s-swap"
            return summarize(name, result, v1, v2, result.marks["promote"]), f"v1 {v1}, v2 {v2}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argument_parser(__file__, __doc__)
    p.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument(
        "--items", type=int, default=20_000, help="catalogue size of each version (default 20k: exact search)"
    )
    p.add_argument("--out-name", default="load", help="results file name (default: load)")
    p.add_argument(
        "--context",
        default="not stated",
        help="what else ran on the machine (written into the notes), e.g. 'idle machine'",
    )
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    row, versions = run(args.seconds, args.concurrency, args.items, log)
    error_kinds = row.pop("error_kinds")
    print_table([row])
    if error_kinds:
        log(f"failed requests: {error_kinds}")
    if not row["v2_requests"]:
        log("warning: no answer came from the new champion before the end (run longer to see the swap)")
    notes = (
        f"{args.concurrency} closed-loop HTTP/1.1 keep-alive clients (benchmarks/loadgen.py: one asyncio "
        f"process on the same machine as the service; its CPU share {row['client_cpu']:.3f} of one "
        f"core) for {args.seconds:g} s; random-weight PinRec, {args.items} items, d=64, 2 layers; "
        f"k=100, {RECENT_EVENTS} recent events per request, no feature store; `python -m serving.service.cli "
        f"serve` on 127.0.0.1 (micro-batching and encoder states at their defaults, 1 faiss + 1 torch "
        f"thread, pointer poll 1 s); champion promoted from v1 to v2 half way ({versions}). "
        f"Latencies are client-observed. Failed requests by kind: {error_kinds or 'none'}. Before "
        f"issue 16 (2026-11-22: threads as clients, one request at a time in a thread pool) this row "
        f"gave 52.5 requests/s, p99 652.7 ms. Else on the machine during the run: {args.context}."
    )
    json_path, _ = write_results(
        args.out_name, [row], TARGETS, notes, lower_is_better={"errors", "p50_ms", "p99_ms", "swap_s", "client_cpu"}
    )
    log(f"wrote {json_path}")
    return 0 if row["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
