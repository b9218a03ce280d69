"""scale: how each cost grows with data (issue 7), one row per size, each in its own process.

Rows (each runs in a child process, so `peak_rss_mb` is that row's own peak):

* ``events-1e6``, ``events-1e7``, ``events-1e8``: one simulated day of 10^6 / 10^7 / 10^8 events
  (20,000 users, 50,000 items), generated in chunks of ``--chunk-size`` rows (10^6), each chunk
  validated (`events.ingest.validate_events`) and appended to the day's parquet file
  (`events.day_ingest.ingest_day`), then the day's three offline feature tables built by
  streaming the event table (`feature_pipeline.tables.day_feature_tables`) and written
  (`feature_pipeline.store.write_offline_tables`). ``seconds`` (all stages), per stage
  ``generate_seconds``, ``ingest_validate_seconds``, ``features_seconds``,
  ``seconds_per_1e6_events``; ``peak_rss_mb`` (the process's VmHWM) and per stage
  ``ingest_peak_rss_mb`` (generate + validate + write) and ``features_peak_rss_mb`` (VmHWM
  reset between the two), ``baseline_rss_mb`` (after imports).
  ``events_per_s``: events / ingest+validate wall seconds (target >= 10^6 on 2 cores; chunks are
  written by a second thread while the source delivers and validation checks the next one, so the
  writes partly hide behind generation); ``validate_cpu_seconds``, ``write_cpu_seconds``,
  ``duplicates_cpu_seconds``: the CPU seconds of each part in its own thread (Arrow's own worker
  threads not counted);
  ``duplicates_across_chunks``: events found again in a later chunk (0 in the simulated world).
* ``features-engine-1e7``: a day of 10^7 events ingested (not timed), then its three feature
  tables on the Dask engine (`feature_pipeline.engines`, a LocalCluster of ``--dask-workers``
  processes started inside the timed span): ``seconds``, ``peak_rss_mb`` (the larger of this
  process's and the largest worker's), ``local_seconds`` (the local engine, same day, after), and
  the tables are checked identical.
* ``index-sharded-1e6``: the 1M clustered vectors of ``index-1e6``, the IVF index unsharded and in
  4 shards (one trained quantizer, `serving.registry.shards`), both tuned on the same queries:
  ``recall_at_100`` (sharded, on other queries), ``unsharded_recall_at_100``, ``recall_gap``
  (target <= 0.001), ``qps`` (one query per call, 1 faiss thread) and ``unsharded_qps``.
* ``celery-nightly``: `benchmarks.celery_nightly`: Redis, two Celery workers, and one run of
  `nightly_refresh` for a small simulated day through `dagster job execute` with
  PINREC_EXECUTOR=celery (from a prepared state): ``seconds`` (the command), ``workers_used``
  (workers that ran steps, from the run's event log; target 2), ``steps``.
* ``index-1e5``, ``index-1e6``: `benchmarks.serving.bench_ann` (clustered d=64 vectors, the
  index `serving.registry.index.build_tuned_index` picks, tuned to recall@100 >= 0.98 on 1,000 queries,
  measured on 1,000 others): ``build_seconds`` (index build, tuning excluded), ``qps`` (one
  query per call, 1 faiss thread), ``recall@100``.
* ``train-len50``, ``train-len200``, ``train-len1000``: `benchmarks.train_throughput.step_seconds`
  (full training steps of the ML-1M pinrec model, d=128, 2 layers, 3,706 items, full softmax,
  AdamW) at sequence length 50 / 200 / 1000 with 12,800 tokens per batch (256 / 64 / 13
  sequences), bf16 autocast: ``tokens_per_s``.
* ``online``: the rows of `benchmarks.online_latency.measure_online_latency` (Feast online
  reads, sqlite and redis, 1 and 1,000 users) when that module exists.

    nice -n 19 .venv/bin/python -m benchmarks.scale --rows events-1e6,index-1e5   # run rows
    nice -n 19 .venv/bin/python -m benchmarks.scale --collect                     # write results

Each finished row is stored in var/bench/scale/<row>.json; `--collect` (also run after
`--rows`) writes benchmarks/results/scale.json and .md and docs/scale.md from the stored rows;
`--note` appends a sentence to the notes (which rows ran when, what else ran on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results import argument_parser, markdown_table, print_table, write_results
from benchmarks.scale_report import growth_notes, render_doc
from benchmarks.scale_rows import (
    CELERY_ROWS,
    DAY,
    DEFAULT_CHUNK,
    DOC,
    ENGINE_ROWS,
    EVENT_ROWS,
    EVENT_STAGES,
    INDEX_ROWS,
    ITEMS,
    NAME,
    ROOT,
    ROWS,
    SHARDED_ROWS,
    TARGETS,
    TRAIN_ROWS,
    TRAIN_TOKENS_PER_BATCH,
    USERS,
    WORK,
)

# -- memory ------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) since start or the last `reset_peak_rss`."""
    return round(_status_kib("VmHWM") / 1024, 1)


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


# -- rows (run in the child process) -------------------------------------------------------------


def run_events_row(name: str, n_events: int, chunk_size: int) -> dict:
    import shutil

    from events.day_ingest import ingest_day
    from events.table import EventTable
    from feature_pipeline.store import FeastSettings, write_offline_tables
    from feature_pipeline.tables import day_feature_tables
    from world.simulator import SimulatedWorld, SimulatorConfig

    work = WORK / f"work-{name}"
    shutil.rmtree(work, ignore_errors=True)
    world = SimulatedWorld(
        SimulatorConfig(
            seed=0,
            n_users=USERS,
            n_items=ITEMS,
            events_per_day=n_events,
            start_date=DAY,
            n_days=1,
            chunk_size=chunk_size,
        )
    )
    table = EventTable(work / "lake")
    baseline = round(_status_kib("VmRSS") / 1024, 1)
    seconds = dict.fromkeys(EVENT_STAGES, 0.0)  # wall clock
    cpu = dict.fromkeys(EVENT_STAGES, 0.0)  # this process's CPU time (less sensitive to a shared CPU)

    def timed_chunks():
        chunks = world.iter_day(DAY)
        while True:
            t, c = time.perf_counter(), time.process_time()
            chunk = next(chunks, None)
            seconds["generate"] += time.perf_counter() - t
            cpu["generate"] += time.process_time() - c
            if chunk is None:
                return
            yield chunk

    reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    summary = ingest_day(table, DAY, timed_chunks())
    seconds["ingest_validate"] = time.perf_counter() - t0 - seconds["generate"]
    cpu["ingest_validate"] = time.process_time() - c0 - cpu["generate"]
    ingest_peak = peak_rss_mb()
    reset_peak_rss()
    before_features = round(_status_kib("VmRSS") / 1024, 1)  # freed memory the allocator kept
    t1, c1 = time.perf_counter(), time.process_time()
    tables = day_feature_tables(table, DAY)
    write_offline_tables(FeastSettings(work / "feast"), DAY, tables)
    seconds["features"] = time.perf_counter() - t1
    cpu["features"] = time.process_time() - c1
    features_peak = peak_rss_mb()
    total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    file_mb = table.events_path(DAY).stat().st_size / 2**20
    shutil.rmtree(work, ignore_errors=True)
    assert summary.input_rows == n_events and summary.quarantined_rows == 0, summary
    return {
        "name": name,
        "events": n_events,
        "chunk_size": chunk_size,
        "chunks": summary.chunks,
        "seconds": round(total, 1),
        "seconds_per_1e6_events": round(total / n_events * 1e6, 2),
        # ingest + validate over its wall seconds (chunks are written by a second thread beside the
        # source and the next chunk's validation); the CPU seconds of its parts, each in its thread
        "events_per_s": round(n_events / seconds["ingest_validate"]),
        "validate_cpu_seconds": round(summary.validate_cpu_seconds, 1),
        "write_cpu_seconds": round(summary.write_cpu_seconds, 1),
        "duplicates_cpu_seconds": round(summary.duplicates_cpu_seconds, 1),
        "duplicates_across_chunks": summary.duplicates_across_chunks,
        **{f"{stage}_seconds": round(s, 1) for stage, s in seconds.items()},
        "cpu_seconds": round(total_cpu, 1),
        "cpu_seconds_per_1e6_events": round(total_cpu / n_events * 1e6, 2),
        **{f"{stage}_cpu_seconds": round(s, 1) for stage, s in cpu.items()},
        "peak_rss_mb": max(ingest_peak, features_peak),
        "ingest_peak_rss_mb": ingest_peak,
        "features_peak_rss_mb": features_peak,
        "rss_before_features_mb": before_features,
        "baseline_rss_mb": baseline,
        "user_sequence_rows": len(tables["user_sequence"]),
        "item_stats_rows": len(tables["item_stats"]),
        "events_file_mb": round(file_mb, 1),
    }


def run_index_row(name: str, n_items: int, n_clusters: int) -> dict:
    from benchmarks.serving import bench_ann

    r = bench_ann(name, n_items, n_clusters, log)
    return {
        "name": name,
        "items": n_items,
        "build_seconds": r["build_s"],
        "qps": r["qps"],
        "recall@100": r["recall_at_100"],
        "exact_qps": r["exact_qps"],
        "kind": r["kind"],
        "nlist": r["nlist"],
        "peak_rss_mb": peak_rss_mb(),
    }


def run_train_row(name: str, seq_len: int, steps: int, threads: int) -> dict:
    import torch

    from benchmarks.train_throughput import step_seconds

    torch.set_num_threads(threads)
    batch = max(1, round(TRAIN_TOKENS_PER_BATCH / seq_len))
    s = step_seconds("bf16", steps, seq_len=seq_len, batch_size=batch)
    return {
        "name": name,
        "seq_len": seq_len,
        "batch": batch,
        "tokens_per_s": round(batch * seq_len / s),
        "step_s": round(s, 3),
        "threads": threads,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_online_rows() -> list[dict]:
    try:
        from benchmarks.online_latency import measure_online_latency
    except ImportError as exc:
        raise SystemExit(f"online rows not measured: benchmarks/online_latency.py is not importable ({exc})") from exc
    work = WORK / "work-online"
    work.mkdir(parents=True, exist_ok=True)
    return measure_online_latency(work)


def _ingested_day(name: str, n_events: int, chunk_size: int = DEFAULT_CHUNK):
    """A simulated day of `n_events` ingested into a fresh event table (not timed)."""
    import shutil

    from events.day_ingest import ingest_day
    from events.table import EventTable
    from world.simulator import SimulatedWorld, SimulatorConfig

    work = WORK / f"work-{name}"
    shutil.rmtree(work, ignore_errors=True)
    world = SimulatedWorld(
        SimulatorConfig(
            seed=0,
            n_users=USERS,
            n_items=ITEMS,
            events_per_day=n_events,
            start_date=DAY,
            n_days=1,
            chunk_size=chunk_size,
        )
    )
    table = EventTable(work / "lake")
    ingest_day(table, DAY, world.iter_day(DAY))
    return work, table


def _own_peak_rss_mb() -> float:
    """This process's peak RSS (run on each Dask worker)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _ingest_in_child(name: str, n_events: int) -> None:
    _ingested_day(name, n_events)


def run_engine_row(name: str, n_events: int, workers: int) -> dict:
    """The feature tables of a day of `n_events` on the Dask engine (a LocalCluster of `workers`
    processes, started inside the timed span), checked equal to the local engine's. The day is
    ingested first by another process, so this one's memory is the engine's driver's alone."""
    import multiprocessing
    import shutil

    import pandas as pd

    from events.table import EventTable
    from feature_pipeline.engines import FeatureEngine, compute_feature_tables, dask_client, dask_feature_tables

    child = multiprocessing.get_context("spawn").Process(target=_ingest_in_child, args=(name, n_events))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"ingesting the day for {name} failed (exit {child.exitcode})")
    work = WORK / f"work-{name}"
    table = EventTable(work / "lake")
    reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    with dask_client(FeatureEngine("dask", dask_workers=workers)) as client:
        on_dask = dask_feature_tables(table, DAY, client)
        seconds, driver_cpu = time.perf_counter() - t0, time.process_time() - c0
        worker_peaks = client.run(_own_peak_rss_mb)  # {worker address: its peak RSS}
    driver_peak = peak_rss_mb()
    t1 = time.perf_counter()
    local = compute_feature_tables(table, DAY)
    local_seconds = time.perf_counter() - t1
    for view in local:
        pd.testing.assert_frame_equal(on_dask[view], local[view])
    shutil.rmtree(work, ignore_errors=True)
    worker_peak = max(worker_peaks.values())
    return {
        "name": name,
        "events": n_events,
        "engine": "dask",
        "workers": workers,
        "seconds": round(seconds, 1),
        "driver_cpu_seconds": round(driver_cpu, 1),
        "peak_rss_mb": max(driver_peak, worker_peak),
        "driver_peak_rss_mb": driver_peak,
        "worker_peak_rss_mb": worker_peak,
        "local_seconds": round(local_seconds, 1),
        "identical_to_local": True,
        "user_sequence_rows": len(local["user_sequence"]),
        "item_stats_rows": len(local["item_stats"]),
    }


def run_sharded_index_row(name: str, n_items: int, n_clusters: int, n_shards: int) -> dict:
    """The IVF index `build_tuned_index` picks, unsharded and in `n_shards` shards (one trained
    quantizer), tuned on the same queries: recall@100 of each on other queries, one-query-per-call
    qps of the sharded one (1 faiss thread, shards searched one after the other)."""
    import faiss

    from benchmarks.serving import clustered, one_at_a_time_qps
    from serving.registry.index import build_tuned_index, exact_top_k, recall_at_k

    faiss.omp_set_num_threads(2)
    x, centers = clustered(n_items, n_clusters, seed=1)
    tune_q, _ = clustered(1000, n_clusters, seed=2, centers=centers)
    eval_q, _ = clustered(1000, n_clusters, seed=3, centers=centers)
    one, tuned_one = build_tuned_index(x, queries=tune_q)
    sharded, tuned = build_tuned_index(x, queries=tune_q, shards=n_shards)
    exact = exact_top_k(x, eval_q, 100)
    recall_one = recall_at_k(one.search(eval_q, 100)[1], exact, 100)
    recall = recall_at_k(sharded.search(eval_q, 100)[1], exact, 100)
    faiss.omp_set_num_threads(1)
    qps, qps_one = one_at_a_time_qps(sharded, eval_q), one_at_a_time_qps(one, eval_q)
    return {
        "name": name,
        "items": n_items,
        "shards": n_shards,
        "kind": tuned.kind,
        "nlist": tuned.build_params.get("nlist"),
        **tuned.params,
        "recall_at_100": round(recall, 4),
        "unsharded_recall_at_100": round(recall_one, 4),
        "recall_gap": round(abs(recall - recall_one), 4),
        "qps": round(qps, 1),
        "unsharded_qps": round(qps_one, 1),
        "same_params_as_unsharded": tuned.params == tuned_one.params,
        "build_seconds": round(tuned.build_seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_celery_row(name: str) -> dict:
    from benchmarks.celery_nightly import celery_nightly_row

    return celery_nightly_row(name, WORK / f"work-{name}", log)


def stored_name(row: str, chunk_size: int) -> str:
    """The stored row's name: an events row at a non-default chunk size is an extra row."""
    if row in EVENT_ROWS and chunk_size != DEFAULT_CHUNK:
        return f"{row}-chunk{chunk_size}"
    return row


def run_row(row: str, args: argparse.Namespace) -> list[dict]:
    if row in EVENT_ROWS:
        return [run_events_row(stored_name(row, args.chunk_size), EVENT_ROWS[row], args.chunk_size)]
    if row in INDEX_ROWS:
        return [run_index_row(row, *INDEX_ROWS[row])]
    if row in ENGINE_ROWS:
        return [run_engine_row(row, ENGINE_ROWS[row], args.dask_workers)]
    if row in SHARDED_ROWS:
        return [run_sharded_index_row(row, *SHARDED_ROWS[row])]
    if row in CELERY_ROWS:
        return [run_celery_row(row)]
    if row in TRAIN_ROWS:
        return [run_train_row(row, TRAIN_ROWS[row], args.steps, args.threads)]
    if row == "online":
        return run_online_rows()
    raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- parent: one child process per row -----------------------------------------------------------


def run_in_child(row: str, args: argparse.Namespace) -> bool:
    """Run one row in a fresh interpreter; it stores var/bench/scale/<row>.json. True if it did."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--child",
        row,
        "--chunk-size",
        str(args.chunk_size),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--dask-workers",
        str(args.dask_workers),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    log(f"{row}: exit {proc.returncode} after {time.perf_counter() - t0:.0f} s")
    return proc.returncode == 0


def stored_rows() -> list[dict]:
    """The finished rows, in ROWS order, then the extra chunk-size rows (by events, chunk)."""
    paths = [WORK / f"{row}.json" for row in ROWS]
    paths += sorted(WORK.glob("events-*-chunk*.json"), key=lambda p: p.stem)
    rows = []
    for path in paths:
        if path.exists():
            rows.extend(json.loads(path.read_text()))
    return rows


# -- notes: the measured growth ------------------------------------------------------------------


def write(rows: list[dict], note: str = "") -> None:
    print_table(rows)
    json_path, md_path = write_results(NAME, rows, TARGETS, " ".join(filter(None, (growth_notes(rows), note))))
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render_doc(json.loads(json_path.read_text())))
    log(f"wrote {json_path}, {md_path} and {DOC}")


def main(argv: list[str] | None = None) -> int:
    p = argument_parser(__file__, __doc__)
    p.add_argument(
        "--rows",
        default=",".join(r for r in ROWS if r not in ("events-1e8", *ENGINE_ROWS, *SHARDED_ROWS, *CELERY_ROWS)),
        help=f"comma-separated rows to run, each in its own process (of: {', '.join(ROWS)})",
    )
    p.add_argument("--collect", action="store_true", help="only write results from stored rows")
    p.add_argument(
        "--note",
        default="",
        help="a sentence appended to the notes: when the stored rows ran and what "
        "else ran on the machine (rows are stored across runs)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK,
        help="events per generated/validated chunk; other than 10^6 stores an extra row <row>-chunk<N>",
    )
    p.add_argument("--steps", type=int, default=7, help="timed training steps per train row")
    p.add_argument("--threads", type=int, default=2, help="torch threads for train rows")
    p.add_argument("--dask-workers", type=int, default=2, help="Dask worker processes for the engine row")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        WORK.mkdir(parents=True, exist_ok=True)
        rows = run_row(args.child, args)
        (WORK / f"{stored_name(args.child, args.chunk_size)}.json").write_text(json.dumps(rows))
        print(markdown_table(rows), flush=True)
        return 0
    if not args.collect:
        failed = [row for row in args.rows.split(",") if not run_in_child(row, args)]
        if failed:
            log(f"rows that did not finish: {', '.join(failed)}")
    write(stored_rows(), args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
