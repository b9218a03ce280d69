"""`pinrec-ops`: the operator's command line.

    pinrec-ops lifecycle   run the main job end to end on the embedded default
    pinrec-ops lookup      print a user's online features from the Feast store
    pinrec-ops ui          start the embedded S3 server and the Dagster UI (dagster dev)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from devstack.processes import reset_signals
from pinrec_ops.defs.config import REPO_ROOT, load_settings

DATA_ASSET_KEYS = [
    "events",
    "event_quarantine",
    "user_sequence_features",
    "item_stats_features",
    "item_surface_stats_features",
    "online_features",
]
SURFACE_STEPS = ["finetuned_model", "candidate_version", "canary_evaluation", "champion"]


def dagster_home() -> Path:
    """The Dagster instance of the embedded default: SQLite storage under var/dagster_home."""
    home = Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / "var" / "dagster_home")).absolute()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "# Embedded default: SQLite run, event-log and schedule storage in this folder.\n"
            "telemetry:\n  enabled: false\n"
            "concurrency:\n  pools:\n    default_limit: 1\n"
        )
    return home


def _child_env(args: argparse.Namespace, s3_env: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(s3_env)
    env["PINREC_SOURCE"] = args.source
    env["DAGSTER_HOME"] = str(dagster_home())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _print_lookup(settings, user_id: int | None) -> None:
    import pandas as pd

    from feature_pipeline.store import FeastSettings, online_user_sequences, open_store

    feast = FeastSettings(data_dir=settings.data_dir / "feast", config_file=settings.feast_config)
    store = open_store(feast)
    if user_id is None:
        files = sorted((feast.data_dir / "offline" / "user_sequence").glob("*.parquet"))
        if not files:
            print("no user features yet: run the lifecycle first")
            return
        latest = pd.read_parquet(files[-1])
        user_id = int(latest.sort_values("seq_length").iloc[-1]["user_id"])
    row = online_user_sequences(store, [user_id]).iloc[0]
    if row["seq_item_ids"] is None:
        print(f"user {user_id}: not in the online store")
        return
    items = list(row["seq_item_ids"])
    titles = {}
    items_file = settings.cache_dir / settings.source / "items.parquet"
    if items_file.exists():
        titles = dict(pd.read_parquet(items_file).itertuples(index=False, name=None))
    print(f"online lookup (Feast {store.config.online_store.type} store) for user {user_id}:")
    print(f"  sequence length: {int(row['seq_length'])}")
    print("  last items (newest last):")
    from events.contract import OUTCOMES

    for item, outcome, ts in list(zip(items, row["seq_outcomes"], row["seq_timestamps_us"]))[-5:]:
        when = pd.Timestamp(ts, unit="us", tz="UTC").strftime("%Y-%m-%d %H:%M")
        print(f"    {when}  {OUTCOMES[outcome]:<9} item {item:>6}  {titles.get(item, '')}")


def _materialize(select: list[str], partition_args: list[str], env: dict[str, str], what: str,
                 fail_fast: bool = True) -> bool:
    # In-process execution: on a 2-core machine, a fresh process per step (the multiprocess
    # default, which the UI keeps) costs more in imports than it gains in parallelism.
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pinrec_ops.definitions",
           "--select", ",".join(select), *partition_args,
           "--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})]
    print(f"\n== {what}\n$ dagster asset materialize --select {','.join(select)} {' '.join(partition_args)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        message = f"{what}: the Dagster run failed (exit {proc.returncode}); see the log above or the run in the UI"
        if fail_fast:
            raise SystemExit(message)
        print(f"== {message}", flush=True)
        return False
    print(f"== {what}: done in {time.monotonic() - t0:.0f} s", flush=True)
    return True


def _print_summary(settings, day: date, registry) -> None:
    from pinrec_ops.defs.state import LifecycleState

    state = LifecycleState(settings.data_dir / "lifecycle")
    print(f"\n{'surface':<10} {'champion version':<28} {'recall@100':>10} {'prev champ':>10} {'canary':<8} note")
    for surface in settings.surfaces:
        try:
            canary = state.read("canary", surface, day)
        except FileNotFoundError:
            print(f"{surface:<10} {'-':<28} {'-':>10} {'-':>10} {'-':<8} no canary for {day}")
            continue
        metrics = canary["metrics"]
        cand = metrics["candidate"].get("recall@100", float("nan"))
        champ = metrics.get("champion", {}).get("recall@100", float("nan"))
        verdict = "passed" if canary.get("passed") else "FAILED"
        note = "; ".join(canary.get("reasons", [])) or ("bootstrapped" if canary.get("champion") is None else "")
        print(f"{surface:<10} {str(registry.champion(surface)):<28} {cand:>10.4f} {champ:>10.4f} {verdict:<8} {note}")


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from devstack.seaweedfs import SeaweedFS
    from events.table import EventTable

    os.environ["PINREC_SOURCE"] = args.source
    settings = load_settings()
    start = date.fromisoformat(args.start) if args.start else settings.start_date
    # the simulated world is made to be run whole; real data defaults to its first 35 days
    days = args.days or ((settings.end_date - start).days + 1 if args.source == "simulated" else 35)
    end = min(start + timedelta(days=days - 1), settings.end_date)
    t0 = time.monotonic()
    print(f"pinrec-ops lifecycle: source {args.source}, days {start} .. {end}, surfaces {', '.join(settings.surfaces)}")
    with SeaweedFS(REPO_ROOT / "var" / "seaweedfs") as s3:
        print(f"S3 server (SeaweedFS) at {s3.endpoint_url}, pid {s3.pid}")
        env = _child_env(args, s3.env())
        _materialize(DATA_ASSET_KEYS, ["--partition-range", f"{start.isoformat()}...{end.isoformat()}"], env,
                     "ingest, features, online store (one single-run backfill)")
        if not args.data_only:
            _materialize(["pretrained_model"], [], env, "pretraining on every surface (the newest day held out)")
            surface_keys = [f"{s}/{step}" for s in settings.surfaces for step in SURFACE_STEPS]
            ok = _materialize(surface_keys, ["--partition", end.isoformat()], env,
                              f"per surface for {end}: fine-tune, publish, canary, promote", fail_fast=False)
        from serving.registry import Registry
        from storage.s3 import list_keys, make_client

        client = make_client(s3.settings())
        archived = list_keys(client, s3.bucket, s3.settings().key("data"))
        table = EventTable(settings.data_dir / "lake")
        ingested = [d for d in table.days() if start <= d <= end]
        good = sum(table.row_count(table.events_path(d)) for d in ingested)
        bad = sum(table.row_count(table.quarantine_path(d)) for d in ingested)
        print(f"\ningested {len(ingested)} day partitions: {good} events, {bad} quarantined; {len(archived)} objects archived to S3")
        _print_lookup(settings, None)
        if not args.data_only:
            _print_summary(settings, end, Registry(s3.settings(), client))
    print(f"\ndone in {time.monotonic() - t0:.0f} s. Open the Dagster UI with:  ./scripts/ui.sh  (then http://127.0.0.1:3000)")
    return 0 if args.data_only or ok else 1


def cmd_lookup(args: argparse.Namespace) -> int:
    os.environ["PINREC_SOURCE"] = args.source
    _print_lookup(load_settings(), args.user)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from devstack.seaweedfs import SeaweedFS

    with SeaweedFS(REPO_ROOT / "var" / "seaweedfs") as s3:
        cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
               "--host", args.host, "--port", str(args.port)]
        print(f"S3 server at {s3.endpoint_url}; Dagster UI at http://{args.host}:{args.port} (Ctrl-C stops both)")
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_child_env(args, s3.env()), preexec_fn=reset_signals)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            return proc.wait(timeout=60)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pinrec-ops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default_source = os.environ.get("PINREC_SOURCE", "simulated")

    life = sub.add_parser("lifecycle", help="run the main job end to end on the embedded default")
    life.add_argument("--source", default=default_source, help="event source: simulated (default), movielens-1m, movielens-100k, parquet")
    life.add_argument("--days", type=int, help="number of day partitions to run (default: the simulated world's 14 days; 35 for other sources)")
    life.add_argument("--data-only", action="store_true", help="ingest and features only; no training or publication")
    life.add_argument("--start", help="first day (YYYY-MM-DD); default: the source's first day")
    life.set_defaults(func=cmd_lifecycle)

    look = sub.add_parser("lookup", help="print a user's online features")
    look.add_argument("--source", default=default_source)
    look.add_argument("--user", type=int, help="user id (default: the longest sequence of the newest day)")
    look.set_defaults(func=cmd_lookup)

    ui = sub.add_parser("ui", help="start the embedded S3 server and the Dagster UI")
    ui.add_argument("--source", default=default_source)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
