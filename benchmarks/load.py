"""Benchmark `load`: the retrieval service under sustained concurrent load with a champion swap.

    nice -n 15 .venv/bin/python -m benchmarks.load                 # 16 clients, 60 s (~2 min)
    nice -n 19 .venv/bin/python -m benchmarks.load --seconds 5 --out-name load_smoke   # smoke

Two PinRec versions (random weights, ``--items`` items, d=64, 2 layers) are published to a real
SeaweedFS and the first is promoted; ``python -m serving.cli serve`` (uvicorn, 127.0.0.1, its
default thread-pool mode, 1 faiss + 1 torch thread, pointer polling every second, user sequences
from each request's ``recent_events``: 20 events) serves it. ``--concurrency`` HTTP clients keep
their connections open and send retrieve requests (k=100) back to back for ``--seconds``; half
way through the second version is promoted and the service hot-swaps to it.

Row ``c{concurrency}-{seconds}s-swap`` (``c16-60s-swap`` by default): ``requests``, ``errors``
(any answer other than 200, and any dropped connection), ``p50_ms``, ``p99_ms`` (client-observed),
``qps``, requests answered by each version (``v1_requests``, ``v2_requests``) and
``swap_s``: seconds from the promotion to the first answer from the new version. Target:
``errors`` = 0. Writes ``benchmarks/results/<out-name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.results import print_table, write_results
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
        events = [{"item_id": item, "outcome": "click" if i % 5 else "save",
                   "timestamp_us": T0_US + (user * RECENT_EVENTS + i) * 60_000_000}
                  for i, item in enumerate(items)]
        bodies.append(json.dumps({"user_id": user, "surface": "homefeed", "k": 100,
                                  "recent_events": events}).encode())
    return bodies


def drive(port: int, bodies: list[bytes], concurrency: int, seconds: float, swap) -> dict:
    """Clients send requests back to back until `seconds` pass; `swap()` runs half way.
    Returns latencies, outcomes (version or error) with their end times, and the swap time."""
    lock = threading.Lock()
    done: list[tuple[float, float, str]] = []  # (end time, latency s, version or error)
    start = time.perf_counter()
    stop_at = start + seconds

    def client(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, i = [], worker
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += concurrency
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/retrieve", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                outcome = json.loads(payload)["version"] if resp.status == 200 else f"status {resp.status}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                outcome = f"error {type(exc).__name__}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            end = time.perf_counter()
            mine.append((end - start, end - t, outcome))
        conn.close()
        with lock:
            done.extend(mine)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(seconds / 2)
    swapped_at = time.perf_counter() - start
    swap()
    for t in threads:
        t.join()
    return {"done": sorted(done), "swapped_at": swapped_at, "wall": time.perf_counter() - start}


def summarize(name: str, run: dict, v1: str, v2: str) -> dict:
    done = run["done"]
    versions = Counter(outcome for _, _, outcome in done)
    errors = sum(n for outcome, n in versions.items() if outcome not in (v1, v2))
    ms = np.array([lat for _, lat, _ in done]) * 1e3
    first_v2 = next((end for end, _, outcome in done if outcome == v2), None)
    return {"name": name, "requests": len(done), "errors": errors,
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "qps": round(len(done) / run["wall"], 1), "v1_requests": versions[v1], "v2_requests": versions[v2],
            "swap_s": round(first_v2 - run["swapped_at"], 2) if first_v2 is not None else None,
            "error_kinds": {k: n for k, n in versions.items() if k not in (v1, v2)}}


def publish_two(registry, n_items: int) -> tuple[str, str]:
    import torch

    from serving.publish import publish_model
    from training.model import PinRec, PinRecConfig

    versions = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = PinRec(PinRecConfig(n_items=n_items, d_model=64, n_layers=2, n_heads=2, max_len=200,
                                    dropout=0.0)).eval()
        versions.append(publish_model(registry, "homefeed", model)[0])
    return versions[0], versions[1]


def run(seconds: float, concurrency: int, n_items: int, log) -> tuple[dict, str]:
    from devstack.seaweedfs import SeaweedFS
    from serving.registry import Registry

    work = Path(tempfile.mkdtemp(prefix="pinrec-bench-load-"))
    try:
        with SeaweedFS(work / "seaweedfs") as s3:
            registry = Registry(s3.settings().with_prefix("load"))
            v1, v2 = publish_two(registry, n_items)
            registry.promote("homefeed", v1)
            log(f"published {v1} (champion) and {v2}")
            env = {**os.environ, **s3.env(), "PINREC_S3_PREFIX": "load"}
            proc, port = start_cli_service(env, ["homefeed"], work / "cache", "--features", "none",
                                           "--poll-interval", "1", "--log-level", "warning",
                                           log_path=work / "service.log")
            try:
                bodies = request_bodies(2000, n_items)
                log(f"service ready on 127.0.0.1:{port}; {concurrency} clients for {seconds:g} s, "
                    f"swap to {v2} at {seconds / 2:g} s")
                result = drive(port, bodies, concurrency, seconds, lambda: registry.promote("homefeed", v2))
            finally:
                stop_process_group(proc)
            name = f"c{concurrency}-{seconds:g}s-swap"
            return summarize(name, result, v1, v2), f"v1 {v1}, v2 {v2}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--items", type=int, default=20_000, help="catalogue size of each version (default 20k: exact search)")
    p.add_argument("--out-name", default="load", help="results file name (default: load)")
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
    notes = (f"{args.concurrency} HTTP/1.1 keep-alive clients (threads of one Python process on the same "
             f"machine as the service) for {args.seconds:g} s; random-weight PinRec, {args.items} items, "
             f"d=64, 2 layers; k=100, {RECENT_EVENTS} recent events per request, no feature store; "
             f"`python -m serving.cli serve` on 127.0.0.1 (thread pool, 1 faiss + 1 torch thread, "
             f"pointer poll 1 s); champion promoted from v1 to v2 half way ({versions}). "
             f"Latencies are client-observed. Failed requests by kind: {error_kinds or 'none'}.")
    json_path, _ = write_results(args.out_name, [row], TARGETS, notes,
                                 lower_is_better={"errors", "p50_ms", "p99_ms", "swap_s"})
    log(f"wrote {json_path}")
    return 0 if row["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
