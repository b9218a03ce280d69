"""The scale benchmark's report: how each cost grows with data (notes for the results) and
docs/scale.md rendered from the stored rows (benchmarks/scale.py measures them)."""

from __future__ import annotations

import importlib.util

from benchmarks.results import markdown_table
from benchmarks.scale_rows import (
    CELERY_ROWS,
    ENGINE_ROWS,
    EVENT_ROWS,
    EVENT_STAGES,
    INDEX_ROWS,
    INGEST_TARGET_EVENTS_PER_S,
    ITEMS,
    PEAK_RSS_GROWTH_TARGET,
    RECALL_GAP_TARGET,
    ROWS,
    SHARDED_ROWS,
    TRAIN_ROWS,
    TRAIN_TOKENS_PER_BATCH,
    USERS,
)


def growth_notes(rows: list[dict]) -> str:
    by_name = {r["name"]: r for r in rows}
    events = [by_name[n] for n in EVENT_ROWS if n in by_name]
    parts = [
        f"Simulated world: {USERS:,} users, {ITEMS:,} items, one day; chunks of "
        f"{events[0]['chunk_size']:,} events; one run per row (not a median: the large days "
        f"take too long to repeat)."
        if events
        else "No events row measured."
    ]
    if events:
        per = ", ".join(
            f"{r['name']}: {r['seconds_per_1e6_events']} s wall and "
            f"{r['cpu_seconds_per_1e6_events']} CPU s per 10^6 events (CPU s: generate "
            f"{r['generate_cpu_seconds']}, ingest+validate {r['ingest_validate_cpu_seconds']}, "
            f"features {r['features_cpu_seconds']}; the process got {r['cpu_seconds'] / r['seconds']:.0%} "
            f"of a core), peak RSS {r['peak_rss_mb']} MB (ingest {r['ingest_peak_rss_mb']}, features "
            f"{r['features_peak_rss_mb']}, baseline after imports {r['baseline_rss_mb']})"
            for r in events
        )
        parts.append(
            f"Measured: {per}. Wall seconds depend on how much of the CPU the row got (it shares "
            "the machine, niced); CPU seconds (this process, all its threads) measure the work."
        )
        first, last = events[0], events[-1]
        if last is not first:
            scale = last["events"] / first["events"]
            parts.append(
                f"From {first['name']} to {last['name']} ({scale:g}x the events) wall time grew "
                f"{last['seconds'] / first['seconds']:.2f}x and CPU time "
                f"{last['cpu_seconds'] / first['cpu_seconds']:.2f}x "
                f"(CPU s per 10^6 events {first['cpu_seconds_per_1e6_events']} -> "
                f"{last['cpu_seconds_per_1e6_events']}); "
                f"peak RSS {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x ({first['peak_rss_mb']} -> "
                f"{last['peak_rss_mb']} MB) at the same chunk size."
            )
        for extra in (r for r in rows if "-chunk" in r["name"]):
            same = by_name.get(extra["name"].split("-chunk")[0])
            if same:
                parts.append(
                    f"Chunk size {extra['chunk_size']:,} vs {same['chunk_size']:,} at {same['events']:,} events: "
                    f"peak RSS {extra['peak_rss_mb']} vs {same['peak_rss_mb']} MB (ingest "
                    f"{extra['ingest_peak_rss_mb']} vs {same['ingest_peak_rss_mb']} MB), "
                    f"{extra['seconds_per_1e6_events']} vs {same['seconds_per_1e6_events']} s per 10^6 events."
                )
        stage = max(EVENT_STAGES, key=lambda s: last[f"{s}_cpu_seconds"])
        parts.append(
            f"First bottleneck (the stage with the most CPU time at {last['name']}): {stage.replace('_', '+')} "
            f"({last[f'{stage}_cpu_seconds']} of {last['cpu_seconds']} CPU s; {last[f'{stage}_seconds']} of "
            f"{last['seconds']} s wall)."
        )
        rates = [r for r in events if "events_per_s" in r]
        if rates:
            parts.append(
                "Ingest + validate (vectorized, duplicates checked across the day): "
                + ", ".join(
                    f"{r['name']} {r['events_per_s']:,} events/s"
                    + (
                        f" (CPU s of its parts: validate {r['validate_cpu_seconds']}, write "
                        f"{r['write_cpu_seconds']} in "
                        f"the writer thread, duplicates across chunks {r['duplicates_cpu_seconds']})"
                        if "write_cpu_seconds" in r
                        else ""
                    )
                    for r in rates
                )
                + f" (target >= {INGEST_TARGET_EVENTS_PER_S:,.0f}: "
                + ("met" if all(r["events_per_s"] >= INGEST_TARGET_EVENTS_PER_S for r in rates) else "NOT met")
                + ")."
            )
        if "events-1e7" in by_name and "events-1e8" in by_name:
            ratio = by_name["events-1e8"]["peak_rss_mb"] / by_name["events-1e7"]["peak_rss_mb"]
            parts.append(
                f"Peak RSS events-1e8 / events-1e7: {ratio:.2f} (target <= {PEAK_RSS_GROWTH_TARGET}: "
                + ("met" if ratio <= PEAK_RSS_GROWTH_TARGET else "NOT met")
                + ")."
            )
    for r in (by_name[n] for n in ENGINE_ROWS if n in by_name):
        parts.append(
            f"{r['name']}: the Dask engine ({r['workers']} worker processes, a LocalCluster started in the "
            f"timed span) built the tables of {r['events']:,} events in {r['seconds']} s (the local engine: "
            f"{r['local_seconds']} s on the same day), tables identical; peak RSS {r['peak_rss_mb']} MB "
            f"(driver {r['driver_peak_rss_mb']}, largest worker {r['worker_peak_rss_mb']})."
        )
    for r in (by_name[n] for n in SHARDED_ROWS if n in by_name):
        parts.append(
            f"{r['name']}: {r['shards']} shards, recall@100 {r['recall_at_100']} vs unsharded "
            f"{r['unsharded_recall_at_100']} (gap {r['recall_gap']}, target <= {RECALL_GAP_TARGET}: "
            + ("met" if r["recall_gap"] <= RECALL_GAP_TARGET else "NOT met")
            + f"), {r['qps']} qps vs {r['unsharded_qps']} unsharded (one query a call, shards one after another)."
        )
    for r in (by_name[n] for n in CELERY_ROWS if n in by_name):
        parts.append(
            f"{r['name']}: nightly_refresh of one small day ({r['world']}) through `dagster job execute` on "
            f"{r['workers']} Celery workers in {r['seconds']} s, {r['steps']} steps ({r['steps_per_worker']}), "
            f"workers_used {r['workers_used']} (target 2: " + ("met" if r["workers_used"] >= 2 else "NOT met") + ")."
        )
    index = [by_name[n] for n in INDEX_ROWS if n in by_name]
    if len(index) == 2:
        a, b = index
        parts.append(
            f"Index {a['name']} -> {b['name']}: build {b['build_seconds'] / a['build_seconds']:.1f}x, "
            f"qps {b['qps'] / a['qps']:.2f}x."
        )
    train = [by_name[n] for n in TRAIN_ROWS if n in by_name]
    if len(train) > 1:
        parts.append(
            "Training tokens/s by sequence length: "
            + ", ".join(f"{r['seq_len']}: {r['tokens_per_s']}" for r in train)
            + f" ({TRAIN_TOKENS_PER_BATCH} tokens per batch)."
        )
    if not any(r["name"].startswith("online") for r in rows):
        why = (
            "not run yet"
            if importlib.util.find_spec("benchmarks.online_latency")
            else "benchmarks/online_latency.py missing"
        )
        parts.append(f"Online rows: not measured ({why}).")
    missing = [n for n in ROWS if n != "online" and n not in by_name]
    if missing:
        parts.append("Not yet measured: " + ", ".join(missing) + ".")
    return " ".join(parts)


DOC_INTRO = """# Scale: how each cost grows with data

Generated by `benchmarks/scale.py --collect` from `benchmarks/results/scale.json` (do not edit by
hand; re-run the rows and collect). See the module docstring for what each row measures.

- `events-1e6/1e7/1e8`: one simulated day generated in chunks, each chunk validated and appended
  to the day's parquet file, then the day's offline feature tables built by streaming the event
  table in record batches. `seconds` and the per-stage seconds (`generate`, `ingest_validate`,
  `features`), `seconds_per_1e6_events` (linear growth keeps it flat), `peak_rss_mb` (the row's
  process, VmHWM; memory bounded by the chunk keeps it flat) and its per-stage parts.
  `events_per_s` is ingest + validate alone (target >= 10^6 events/s on this 2-core machine).
- `features-engine-1e7`: the feature tables of a 10^7-event day on the Dask engine
  (`PINREC_FEATURE_ENGINE=dask`, a local cluster of 2 worker processes), checked identical to the
  local engine's.
- `index-1e5/1e6`: ANN build (`build_seconds`), one-query-per-call `qps`, `recall@100` against
  exact search. `index-sharded-1e6`: the same 1M vectors in 4 shards searched and merged, recall
  against the unsharded index's (target: within 0.001).
- `celery-nightly`: one run of `nightly_refresh` (small day) on two Celery workers through
  `dagster job execute`; `workers_used` (target 2).
- `train-len50/200/1000`: training `tokens_per_s` at each sequence length, same tokens per batch.
- `online-*`: Feast online read latency, sqlite and redis, 1 and 1,000 users (when measured).

Run:

```
nice -n 19 .venv/bin/python -m benchmarks.scale --rows events-1e6,events-1e7,events-1e8
nice -n 19 .venv/bin/python -m benchmarks.scale --rows index-1e5,index-1e6,train-len50,train-len200,train-len1000,online
nice -n 19 .venv/bin/python -m benchmarks.scale --rows features-engine-1e7,index-sharded-1e6,celery-nightly
nice -n 19 .venv/bin/python -m benchmarks.scale --collect
```
"""


ROW_GROUPS = {
    "events": "Ingest + validation + features, one day",
    "features-engine": "Feature tables on the Dask engine",
    "index-sharded": "Sharded ANN index",
    "index": "ANN index build and query",
    "train": "Training throughput by sequence length",
    "celery": "The nightly job on Celery workers",
    "online": "Feast online reads",
}


def render_doc(record: dict) -> str:
    """docs/scale.md: the intro, then one table per row group (their columns differ), the notes."""
    parts = [DOC_INTRO, f"- Date: {record['date']}", f"- Machine: {record['machine']}", ""]
    for prefix, title in ROW_GROUPS.items():
        group = [
            r
            for r in record["rows"]
            if r["name"].startswith(prefix) and not (prefix == "index" and r["name"].startswith("index-sharded"))
        ]
        parts += [f"## {title}", "", markdown_table(group) if group else "_not measured_", ""]
    parts += ["## Notes (measured growth)", "", record.get("notes", ""), ""]
    return "\n".join(parts)
