"""`pinrec-ops`: the operator's command line.

    pinrec-ops lifecycle   run the whole lifecycle on the embedded default (S3 server included)
    pinrec-ops backfill    run nightly_refresh (or retrain) for a range of days, one run per day
    pinrec-ops live        the closed loop: the simulated world reacts to what the system serves,
                           one day at a time (resumable)
    pinrec-ops lookup      print a user's online features from the Feast store
    pinrec-ops ui          start the embedded S3 server and the Dagster UI with its daemon

Every run is a run of the code location's `nightly_refresh` or `retrain` job for one day
partition, executed in this process and recorded in the Dagster instance ($DAGSTER_HOME,
default var/dagster_home), so the UI lists it under the job, on the timeline and in the run
history, with its partition and tags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta

from events.sources import SOURCE_NAMES
from serving.service.cli import iso_date, positive_int
from storage.paths import s3_env_file, var_dir

# The embedded default's local state: the S3 server's data and the environment file that hands its
# address and generated credentials to `serving.service.cli` and `pinrec-ops backfill` (mode 0600).
VAR_DIR = var_dir()
S3_ENV_FILE = s3_env_file()
DATA_ASSET_KEYS = [
    "events",
    "event_quarantine",
    "serving_log",
    "user_sequence_features",
    "item_stats_features",
    "item_surface_stats_features",
    "online_features",
    "online_metrics",
]
SURFACE_STEPS = ["finetuned_model", "candidate_version", "canary_evaluation", "champion"]
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class CliError(Exception):
    """A problem the operator can fix, reported as one line and exit code 1."""


def _use_source(source: str, args: argparse.Namespace | None = None) -> None:
    """Select the source (and `--events`, `--vocabulary`) for this process before the code
    location is loaded (it reads the environment once)."""
    os.environ["PINREC_SOURCE"] = source
    os.environ.setdefault("DAGSTER_HOME", str(VAR_DIR / "dagster_home"))
    events = getattr(args, "events", None)
    if events:
        if source != "parquet":
            raise CliError(f"--events reads a parquet log: use it with --source parquet (not {source})")
        os.environ["PINREC_PARQUET_LOCATION"] = events if events.startswith("s3://") else os.path.abspath(events)
    vocabulary = getattr(args, "vocabulary", None)
    if vocabulary:
        os.environ["PINREC_VOCABULARY"] = os.path.abspath(vocabulary)


def _settings():
    from assets.config import load_settings

    try:
        return load_settings()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _instance():
    import dagster as dg

    from orchestration.runs import dagster_home, fail_orphaned_runs

    os.environ["DAGSTER_HOME"] = str(dagster_home(VAR_DIR / "dagster_home"))
    instance = dg.DagsterInstance.get()
    for run_id in fail_orphaned_runs(instance):  # left STARTED by a process that was killed
        print(
            f"run {run_id} was left unfinished by a process that is gone: marked failed, its pool slots freed",
            flush=True,
        )
    return instance


def _require_s3() -> None:
    from storage.s3 import S3Settings, S3Unavailable, check_reachable

    try:
        check_reachable(S3Settings.from_env())
    except S3Unavailable as exc:
        raise CliError(str(exc)) from None


def _step_errors(result) -> list[str]:
    errors = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data and event.step_failure_data.error:
            errors.append(f"{event.step_key}: {event.step_failure_data.error.message.strip().splitlines()[0]}")
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            errors.append(f"{evaluation.asset_key.to_user_string()} {evaluation.check_name}: {evaluation.description}")
    return errors


def run_day(
    instance, job: str, day: date, what: str, *, assets: list[str] | None = None, trigger: str = "cli", resources=None
) -> bool:
    """One run of `job` for `day`; prints one line (and the failures); True when it succeeded."""
    from orchestration.runs import run_job

    began = time.monotonic()
    result = run_job(
        job, day, instance, assets=assets, resources=resources, tags={"pinrec/trigger": trigger}, run_config=QUIET_LOGS
    )
    materialized = sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()})
    status = "ok" if result.success else "FAILED"
    print(
        f"  {job:<16} {day}  {what:<34} {status:<6} {len(materialized):>2} assets  "
        f"{time.monotonic() - began:5.0f} s  run {result.run_id[:8]}",
        flush=True,
    )
    for error in _step_errors(result):
        print(f"      {error}", flush=True)
    return result.success


def _print_lookup(settings, user_id: int | None) -> None:
    import pandas as pd

    from feature_pipeline.store import FeastSettings, online_user_sequences, open_store

    feast = FeastSettings(data_dir=settings.data_dir / "feast", config_file=settings.feast_config)
    if not (feast.data_dir / "registry.db").exists():
        print(
            f"no online features under {feast.data_dir} yet: run `pinrec-ops lifecycle --source "
            f"{settings.source}` first"
        )
        return
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
    for item, outcome, ts in list(zip(items, row["seq_outcomes"], row["seq_timestamps_us"]))[-5:]:
        when = pd.Timestamp(ts, unit="us", tz="UTC").strftime("%Y-%m-%d %H:%M")
        name = settings.vocabulary.codes.outcomes[outcome]
        print(f"    {when}  {name:<9} item {item:>6}  {titles.get(item, '')}")


def lifecycle_summary(settings, day: date, registry) -> dict:
    """Per surface: the champion version after the day, the verdict (passed / failed and its
    reasons) and the yardstick (the gate's offline measure, `yardstick`) of the champion, the
    candidate, the previous champion, the popularity policy and (where the log has an exploration
    share) the random policy on the held-out day's users; recall@100 beside it. Also written to
    var/<source>/summary.json by the main command."""
    from assets.records import CanaryRecord
    from assets.state import LifecycleState

    state = LifecycleState(settings.data_dir / "lifecycle")
    surfaces = {}
    for surface in settings.surfaces:
        champion = registry.champion(surface)
        entry = {"champion": champion, "day": day.isoformat()}
        try:
            canary = state.load(CanaryRecord, surface, day)
        except FileNotFoundError:
            entry["note"] = f"no canary for {day}"
            surfaces[surface] = entry
            continue
        metrics, baselines, name = canary.metrics, canary.baselines, canary.yardstick
        by_role = {**metrics, **baselines}
        figure = {role: values.get(name) for role, values in by_role.items()}
        # the champion after the day: the candidate when promoted, else the one it was judged against
        now = "candidate" if champion == canary.candidate else "champion" if champion == canary.champion else None
        yardstick = {
            "name": name,
            "champion": figure.get(now),
            "candidate": figure.get("candidate"),
            "previous_champion": figure.get("champion"),
            "popularity": figure.get("popularity"),
            "random": figure.get("random"),
        }
        entry.update(
            {
                "candidate": canary.candidate,
                "yardstick": yardstick,
                "recall@100": metrics.get("candidate", {}).get("recall@100"),
                "previous_champion_recall@100": metrics.get("champion", {}).get("recall@100"),
                "popularity_recall@100": baselines.get("popularity", {}).get("recall@100"),
                "outcomes_measured": canary.outcomes,
                "canary": "passed" if canary.passed else "failed",
                "promoted": champion == canary.candidate,
                "reasons": canary.reasons,
            }
        )
        surfaces[surface] = entry
    return {
        "source": settings.source,
        "day": day.isoformat(),
        "vocabulary": settings.vocabulary.label,
        "surfaces": surfaces,
    }


def _print_summary(summary: dict) -> None:
    def figure(value) -> str:
        return f"{value:>10.4f}" if value is not None else f"{'-':>10}"

    names = {e["yardstick"]["name"] for e in summary["surfaces"].values() if "yardstick" in e}
    print(f"\nyardstick: {', '.join(sorted(names)) or '-'} (the gate's offline measure; higher is better)")
    print(
        f"{'surface':<10} {'champion version':<28} {'champion':>10} {'candidate':>10} {'popularity':>10} "
        f"{'random':>10} {'canary':<8} note"
    )
    for surface, e in summary["surfaces"].items():
        if "canary" not in e:
            dashes = " ".join(f"{'-':>10}" for _ in range(4))
            print(f"{surface:<10} {str(e['champion']):<28} {dashes} {'-':<8} {e.get('note', '')}")
            continue
        y = e["yardstick"]
        if e["reasons"]:
            note = "not promoted: " + "; ".join(e["reasons"])
        else:
            note = "bootstrapped" if y["previous_champion"] is None and e["promoted"] else ""
        print(
            f"{surface:<10} {str(e['champion']):<28} {figure(y['champion'])} {figure(y['candidate'])} "
            f"{figure(y['popularity'])} {figure(y['random'])} {e['canary']:<8} {note}"
        )


def _log_days(settings) -> list[date]:
    """The days a parquet log has (its `{date}` files, else its rows' days)."""
    from events.sources import ParquetSource

    if not settings.parquet_location:
        raise CliError(
            "the parquet source needs the log: --events PATH (a folder of parquet files, a file, or a "
            "pattern with {date}) or PINREC_PARQUET_LOCATION"
        )
    if settings.parquet_location.startswith("s3://"):
        return []  # the span comes from PINREC_START_DATE / PINREC_END_DATE
    try:
        return ParquetSource(settings.parquet_location).event_days()
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot read the log {settings.parquet_location}: {exc}") from None


def lifecycle_window(args: argparse.Namespace, settings) -> tuple[date, date]:
    """The days the main command runs: from --start (default: the source's first day) for --days
    days (default: the simulated world's whole span, 35 days of MovieLens); for a parquet log
    without --start, its newest --days days (default 35)."""
    end_date = settings.end_date
    if args.source == "parquet" and end_date is None:
        days = _log_days(settings)
        if not days:
            raise CliError(f"no events in the log {settings.parquet_location} (set PINREC_END_DATE for an S3 log)")
        end_date = days[-1]
    if end_date is None:
        raise CliError(f"the {args.source} source has no known last day: set PINREC_END_DATE (YYYY-MM-DD)")
    if args.source == "parquet" and args.start is None:
        end = end_date
        start = max(settings.start_date, end - timedelta(days=(args.days or 35) - 1))
        return start, end
    start = args.start or settings.start_date
    if start < settings.start_date:
        raise CliError(f"--start {start} is before the source's first day {settings.start_date}")
    # the simulated world is made to be run whole; real data defaults to its first 35 days
    days = args.days or ((end_date - start).days + 1 if args.source == "simulated" else 35)
    end = min(start + timedelta(days=days - 1), end_date)
    if end < start:
        raise CliError(f"--start {start} is after the source's last day {end_date}")
    return start, end


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from devstack.seaweedfs import SeaweedFS, write_env_file

    _use_source(args.source, args)
    settings = _settings()
    start, end = lifecycle_window(args, settings)
    t0 = time.monotonic()
    print(
        f"pinrec-ops lifecycle: source {args.source}, days {start} .. {end}, surfaces {', '.join(settings.surfaces)}, "
        f"vocabulary {settings.vocabulary.label}"
    )
    ok = True
    with SeaweedFS(VAR_DIR / "seaweedfs") as s3:
        write_env_file(S3_ENV_FILE, s3.env())
        os.environ.update(s3.env())
        print(f"S3 server (SeaweedFS) at {s3.endpoint_url}, pid {s3.pid}; environment in {S3_ENV_FILE}")
        try:
            instance = _instance()
            from orchestration.runs import days_between

            print(
                f"\n== ingest, features, online store: one run of nightly_refresh per day "
                f"(Dagster instance {os.environ['DAGSTER_HOME']})",
                flush=True,
            )
            for day in days_between(start, end):
                if not run_day(
                    instance,
                    "nightly_refresh",
                    day,
                    "ingest, features, online store",
                    assets=DATA_ASSET_KEYS,
                    trigger="lifecycle",
                ):
                    raise CliError(f"the nightly_refresh run for {day} failed (see above, or the run in the UI)")
            if not args.data_only:
                print(
                    f"\n== retrain for {end}: pretrain on the days before it, then per surface fine-tune, "
                    "publish, canary, promote",
                    flush=True,
                )
                ok = run_day(instance, "retrain", end, "pretrain; per surface to champion", trigger="lifecycle")
            _report(settings, start, end, s3, data_only=args.data_only)
        finally:
            S3_ENV_FILE.unlink(missing_ok=True)
    print(
        f"\ndone in {time.monotonic() - t0:.0f} s. Open the Dagster UI with:  ./scripts/ui.sh  (then http://127.0.0.1:3000)"
    )
    return 0 if ok else 1


def _report(settings, start: date, end: date, s3, *, data_only: bool) -> None:
    from events.table import EventTable
    from serving.service.checks import checked_registry
    from storage.files import atomic_write_text
    from storage.s3 import list_keys, make_client

    client = make_client(s3.settings())
    archived = list_keys(client, s3.bucket, s3.settings().key("data"))
    table = EventTable(settings.data_dir / "lake")
    ingested = [d for d in table.days() if start <= d <= end]
    good = sum(table.row_count(table.events_path(d)) for d in ingested)
    bad = sum(table.row_count(table.quarantine_path(d)) for d in ingested)
    print(
        f"\ningested {len(ingested)} day partitions: {good} events, {bad} quarantined; {len(archived)} objects "
        "archived to S3"
    )
    _print_lookup(settings, None)
    if not data_only:
        summary = lifecycle_summary(settings, end, checked_registry(s3.settings(), client))
        _print_summary(summary)
        path = atomic_write_text(settings.data_dir / "summary.json", json.dumps(summary, indent=2, default=str))
        print(f"summary: {path}")


def cmd_backfill(args: argparse.Namespace) -> int:
    _use_source(args.source, args)
    settings = _settings()
    if args.to < args.from_:
        raise CliError(f"--to {args.to} is before --from {args.from_}")
    if args.from_ < settings.start_date:
        raise CliError(f"--from {args.from_} is before the first day partition {settings.start_date}")
    if args.to >= date.today():
        raise CliError(f"--to {args.to} has not ended yet (the newest partition is {date.today() - timedelta(days=1)})")
    _require_s3()
    instance = _instance()
    from orchestration.runs import days_between

    assets = DATA_ASSET_KEYS if args.data_only else None
    what = (
        "ingest, features, online store"
        if args.data_only
        else ("everything" if args.job == "nightly_refresh" else "pretrain; per surface to champion")
    )
    print(f"backfill: {args.job} for {args.from_} .. {args.to}, one run per day, in order", flush=True)
    failed = [
        day
        for day in days_between(args.from_, args.to)
        if not run_day(instance, args.job, day, what, assets=assets, trigger="backfill")
    ]
    if failed:
        print(
            f"{len(failed)} of {(args.to - args.from_).days + 1} days failed: {', '.join(map(str, failed))}; "
            "re-run one with --from DAY --to DAY"
        )
    return 1 if failed else 0


LIVE_DATA_DIR = "live"  # var/live: the closed loop's own data, beside the main command's var/simulated


def live_environment(args: argparse.Namespace) -> dict[str, str]:
    """The settings of the closed loop: the simulated source in closed-loop mode, promotion
    through the online canary, the world's span long enough for the days to play."""
    env = {
        "PINREC_SOURCE": "simulated",
        "PINREC_SIM_CLOSED_LOOP": "1",
        "PINREC_ONLINE_CANARY": "1",
        "PINREC_SIM_DAYS": str(max(366, getattr(args, "days", 0) or 0)),
        "PINREC_DATA_DIR": os.environ.get("PINREC_DATA_DIR") or str(VAR_DIR / LIVE_DATA_DIR),
    }
    if getattr(args, "drift_day", None):
        env["PINREC_SIM_DRIFT_DAY"] = args.drift_day.isoformat()
        env["PINREC_SIM_DRIFT_KIND"] = args.drift_kind
    return env


def cmd_live(args: argparse.Namespace) -> int:
    from devstack.seaweedfs import SeaweedFS, write_env_file

    os.environ.update(live_environment(args))
    _use_source("simulated")
    settings = _settings()
    from world.experiments import EXPERIMENT_ARMS

    arms = [a for a in EXPERIMENT_ARMS if not args.arms or a.name in args.arms]
    unknown = set(args.arms or []) - {a.name for a in EXPERIMENT_ARMS}
    if unknown:
        raise CliError(f"unknown arms {sorted(unknown)}; the arms are {', '.join(a.name for a in EXPERIMENT_ARMS)}")
    if args.external_s3:  # an S3 the operator runs (its environment is set): used as it is
        _require_s3()
        _play_live(args, settings, arms)
        return 0
    with SeaweedFS(VAR_DIR / "seaweedfs") as s3:
        write_env_file(S3_ENV_FILE, s3.env())
        os.environ.update(s3.env())
        try:
            _play_live(args, settings, arms)
        finally:
            S3_ENV_FILE.unlink(missing_ok=True)
    print("open the UI on the closed loop with:  .venv/bin/pinrec-ops ui --live")
    return 0


def _play_live(args: argparse.Namespace, settings, arms) -> None:
    from assets.resources import build_resources
    from orchestration.live import DayNotFinished, LiveRunner

    instance = _instance()
    runner = LiveRunner(
        settings=settings,
        instance=instance,
        resources=build_resources(settings),
        arms=arms,
        warmup_days=args.warmup_days,
    )
    print(
        f"pinrec-ops live: {args.days} days from {runner.next_day()} (world {settings.world_dir}, arms "
        f"{', '.join(a.name for a in arms)}; Dagster instance {os.environ['DAGSTER_HOME']})",
        flush=True,
    )
    try:
        runner.play(args.days)
    except DayNotFinished as exc:
        raise CliError(str(exc)) from None


def cmd_lookup(args: argparse.Namespace) -> int:
    _use_source(args.source, args)
    _print_lookup(_settings(), args.user)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from devstack.dagster_dev import DagsterUI
    from devstack.seaweedfs import SeaweedFS, write_env_file

    if args.live:
        os.environ.update(live_environment(args))
        args.source = "simulated"
    _use_source(args.source, args)
    _settings()
    from orchestration.runs import dagster_home

    home = dagster_home(VAR_DIR / "dagster_home")
    with SeaweedFS(VAR_DIR / "seaweedfs") as s3:
        write_env_file(S3_ENV_FILE, s3.env())
        try:
            ui = DagsterUI(
                home,
                {**os.environ, **s3.env()},
                daemon=True,
                host=args.host,
                port=args.port,
                log_path=home / "dagster-dev.log",
            )
            with ui:
                print(
                    f"S3 server at {s3.endpoint_url} (environment in {S3_ENV_FILE}: `source {S3_ENV_FILE}` for "
                    f"serving.service.cli); Dagster UI and daemon at {ui.url} (log {ui.log_path}); Ctrl-C stops both",
                    flush=True,
                )
                try:
                    return ui.wait()
                except KeyboardInterrupt:
                    return 0
        finally:
            S3_ENV_FILE.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinrec-ops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    default_source = os.environ.get("PINREC_SOURCE", "simulated")
    if default_source not in SOURCE_NAMES:
        default_source = "simulated"

    def source_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--source",
            default=default_source,
            choices=SOURCE_NAMES,
            help=f"event source (default: $PINREC_SOURCE or simulated; {', '.join(SOURCE_NAMES)})",
        )

    def log_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--events",
            help="the parquet log (with --source parquet): a folder of parquet files, a file, "
            "or a pattern with {date} (e.g. logs/date={date}/events.parquet)",
        )
        p.add_argument(
            "--vocabulary",
            help="the log's vocabulary (YAML; default $PINREC_VOCABULARY, else the "
            "source's shipped file in events/vocabularies/)",
        )

    life = sub.add_parser("lifecycle", help="run the whole lifecycle on the embedded default")
    source_option(life)
    life.add_argument(
        "--days",
        type=positive_int,
        help="number of day partitions to run (default: the simulated world's 14 days; 35 for other "
        "sources; a parquet log's newest days unless --start)",
    )
    log_options(life)
    life.add_argument("--data-only", action="store_true", help="ingest and features only; no training or publication")
    life.add_argument("--start", type=iso_date, help="first day (YYYY-MM-DD); default: the source's first day")
    life.set_defaults(func=cmd_lifecycle)

    back = sub.add_parser(
        "backfill",
        help="run a job for a range of days, one run per day (S3 from the environment)",
        description="Backfill a range of day partitions: one run of the job per day, in order, in "
        "this process, recorded in the Dagster instance like a daemon's run. Needs the "
        "S3 environment (`source var/s3.env` while `pinrec-ops ui` runs).",
    )
    source_option(back)
    back.add_argument("--from", dest="from_", type=iso_date, required=True, help="first day (YYYY-MM-DD)")
    back.add_argument("--to", type=iso_date, required=True, help="last day, inclusive (YYYY-MM-DD)")
    back.add_argument("--job", choices=("nightly_refresh", "retrain"), default="nightly_refresh")
    back.add_argument("--data-only", action="store_true", help="only ingest, features and online store")
    log_options(back)
    back.set_defaults(func=cmd_backfill)

    live = sub.add_parser(
        "live",
        help="the closed loop: the world reacts to what the system serves, day by day",
        description="Advance the simulated world one day at a time: it plays the day against what "
        "each user's experiment arm serves (the system through its own retrieval API), "
        "then the system runs nightly_refresh for the day, the drift sensor and the "
        "weekly schedule through Dagster. Resumes where it stopped (var/live).",
    )
    live.add_argument("--days", type=positive_int, required=True, help="days to play from where the loop stopped")
    live.add_argument("--drift-day", type=iso_date, help="inject drift from this day (YYYY-MM-DD)")
    live.add_argument("--drift-kind", choices=("outcome_mix", "interest_shift"), default="interest_shift")
    live.add_argument("--arms", nargs="+", help="only these experiment arms (default: all)")
    live.add_argument(
        "--external-s3",
        action="store_true",
        help="use the S3 server of the environment (PINREC_S3_ENDPOINT_URL, AWS_*) instead of "
        "starting the embedded one",
    )
    live.add_argument(
        "--warmup-days", type=positive_int, default=3, help="days served by nobody before the first retrain (default 3)"
    )
    live.set_defaults(func=cmd_live)

    look = sub.add_parser("lookup", help="print a user's online features")
    source_option(look)
    look.add_argument("--user", type=int, help="user id (default: the longest sequence of the newest day)")
    log_options(look)
    look.set_defaults(func=cmd_lookup)

    ui = sub.add_parser("ui", help="start the embedded S3 server and the Dagster UI with its daemon")
    source_option(ui)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--live", action="store_true", help="the closed loop's code location and data (var/live)")
    log_options(ui)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"pinrec-ops {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
