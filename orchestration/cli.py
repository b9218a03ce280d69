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
import os
import sys
import time
from datetime import date, timedelta

from events.sources import SOURCE_NAMES
from orchestration import output
from orchestration.steps import DATA_ASSET_KEYS
from serving.service.cli import iso_date, positive_int
from storage.paths import s3_env_file, var_dir

# The embedded default's local state: the S3 server's data and the environment file that hands its
# address and generated credentials to `serving.service.cli` and `pinrec-ops backfill` (mode 0600).
VAR_DIR = var_dir()
S3_ENV_FILE = s3_env_file()


class CliError(Exception):
    """A problem the operator can fix, reported as one line and exit code 1."""


def _chosen(source: str, args: argparse.Namespace | None = None, extra: dict[str, str] | None = None) -> dict:
    """The settings variables the command line chooses: `extra` (the closed loop's), then the
    source (and `--deployment`, `--events`, `--vocabulary`)."""
    chosen = {**(extra or {}), "PINREC_SOURCE": source}
    if getattr(args, "deployment", None):
        chosen["PINREC_DEPLOYMENT"] = args.deployment
    events = getattr(args, "events", None)
    if events:
        if source != "parquet":
            raise CliError(f"--events reads a parquet log: use it with --source parquet (not {source})")
        chosen["PINREC_PARQUET_LOCATION"] = events if events.startswith("s3://") else os.path.abspath(events)
    vocabulary = getattr(args, "vocabulary", None)
    if vocabulary:
        chosen["PINREC_VOCABULARY"] = os.path.abspath(vocabulary)
    return chosen


def _settings(source: str, args: argparse.Namespace | None = None, extra: dict[str, str] | None = None):
    """The deployment's settings: this process's environment with the command line's choices
    (`_chosen`), parsed here and passed on. The runs of this process are runs of their graph
    (orchestration.runs.code_location(settings)); this process then uses the deployment's Dagster
    instance and records it (orchestration.deployments).

    The choices are also exported to this process's environment, for the processes it starts:
    the Dagster UI's webserver and daemon and the run workers they launch load the code location,
    which reads its settings from the environment only (orchestration.definitions.defs). The graph
    of this process does not come from that export."""
    from assets.config import load_settings
    from orchestration.deployments import use_deployment

    chosen = _chosen(source, args, extra)
    try:
        settings = load_settings({**os.environ, **chosen})
    except ValueError as exc:
        raise CliError(str(exc)) from None
    os.environ.update(chosen)  # for the processes this command starts (docstring)
    use_deployment(settings)
    return settings


def _s3_server(settings):
    """The embedded S3 server, handing out the deployment's prefix."""
    from devstack.seaweedfs import SeaweedFS

    return SeaweedFS(VAR_DIR / "seaweedfs", prefix=settings.key_prefix)


def _shared_env(s3) -> dict[str, str]:
    """The S3 server's environment for other commands (var/s3.env): without the key prefix, which
    each command takes from its own deployment."""
    return {k: v for k, v in s3.env().items() if k != "PINREC_S3_PREFIX"}


def _instance():
    import dagster as dg

    from orchestration.runs import dagster_home, fail_orphaned_runs

    os.environ["DAGSTER_HOME"] = str(dagster_home(VAR_DIR / "dagster" / "default"))
    instance = dg.DagsterInstance.get()
    for run_id in fail_orphaned_runs(instance):  # left STARTED by a process that was killed
        print(
            f"run {run_id} was left unfinished by a process that is gone: marked failed, its pool slots freed",
            flush=True,
        )
    return instance


def _log_client(settings, s3=None):
    """An S3 client for a log under s3:// (the embedded server's `s3`, else the environment's)."""
    if not (settings.parquet_location or "").startswith("s3://"):
        return None
    from storage.s3 import S3Settings, make_client

    return make_client(s3.settings() if s3 is not None else S3Settings.from_env())


def _present_window(settings, start: date, end: date, s3=None):
    """The days of start .. end the log has, and those days in order as they are run (a line for
    each absent day: orchestration.runs.each_present_day)."""
    from orchestration.runs import days_between, each_present_day, present_days

    window = days_between(start, end)
    present = present_days(settings, window, s3_client=_log_client(settings, s3))
    return present, each_present_day(window, present)


def _require_s3() -> None:
    from storage.s3 import S3Settings, S3Unavailable, check_reachable

    try:
        check_reachable(S3Settings.from_env())
    except S3Unavailable as exc:
        raise CliError(str(exc)) from None


def run_day(
    instance,
    settings,
    job: str,
    day: date,
    what: str,
    *,
    assets: list[str] | None = None,
    trigger: str = "cli",
    resources=None,
) -> bool:
    """One run of `job` of the graph of `settings` for `day`; prints the day's line, ending with its
    verdict (`promoted`, `not promoted: <first reason>`, `FAILED: <first error line>` or `ok`:
    orchestration.verdicts); with --verbose, every failed step's error. False only when the run
    failed for an error."""
    from orchestration.runs import run_job
    from orchestration.verdicts import run_verdict, step_errors

    began = time.monotonic()
    if sys.stdout.isatty():  # in a terminal, the stage that is running (its line replaces it)
        print(f"  {job:<16} {day}  {what:<34} running ...", end="\r", flush=True)
    result = run_job(
        job,
        day,
        instance,
        settings=settings,
        assets=assets,
        resources=resources,
        tags={"pinrec/trigger": trigger},
        run_config=output.run_config(),
    )
    materialized = sorted({e.asset_key.to_user_string() for e in result.get_asset_materialization_events()})
    verdict = run_verdict(instance, result.run_id)
    print(
        f"  {job:<16} {day}  {what:<34} {len(materialized):>2} assets  "
        f"{time.monotonic() - began:5.0f} s  run {result.run_id[:8]}  {verdict}",
        flush=True,
    )
    if output.verbose():
        for error in step_errors(instance, result.run_id):
            print(f"      {error}", flush=True)
    return not verdict.startswith("FAILED")


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
    from devstack.seaweedfs import write_env_file

    settings = _settings(args.source, args)
    start, end = lifecycle_window(args, settings)
    t0 = time.monotonic()
    print(
        f"pinrec-ops lifecycle: deployment {settings.deployment}, source {args.source}, days {start} .. {end}, "
        f"surfaces {', '.join(settings.surfaces)}, vocabulary {settings.vocabulary.label}"
    )
    ok = True
    with _s3_server(settings) as s3:
        write_env_file(S3_ENV_FILE, _shared_env(s3))
        os.environ.update(s3.env())
        print(f"S3 server (SeaweedFS) at {s3.endpoint_url}, pid {s3.pid}; environment in {S3_ENV_FILE}")
        try:
            instance = _instance()
            print(
                f"\n== ingest, features, online store: one run of nightly_refresh per day "
                f"(Dagster instance {os.environ['DAGSTER_HOME']})",
                flush=True,
            )
            days, each_day = _present_window(settings, start, end, s3)
            if not days:
                raise CliError(f"no events in the log for any day of {start} .. {end}")
            for day in each_day:
                if not run_day(
                    instance,
                    settings,
                    "nightly_refresh",
                    day,
                    "ingest, features, online store",
                    assets=DATA_ASSET_KEYS,
                    trigger="lifecycle",
                ):
                    raise CliError(f"the nightly_refresh run for {day} failed (see above, or the run in the UI)")
            if not args.data_only:
                print(
                    f"\n== retrain for {days[-1]}: pretrain on the days before it, then per surface fine-tune, "
                    "publish, canary, promote",
                    flush=True,
                )
                ok = run_day(
                    instance, settings, "retrain", days[-1], "pretrain; per surface to champion", trigger="lifecycle"
                )
            from orchestration.report import report

            report(settings, start, days[-1], s3, data_only=args.data_only)
        finally:
            S3_ENV_FILE.unlink(missing_ok=True)
    print(
        f"\ndone in {time.monotonic() - t0:.0f} s. Open the Dagster UI with:  ./scripts/ui.sh  (then http://127.0.0.1:3000)"
    )
    return 0 if ok else 1


def cmd_backfill(args: argparse.Namespace) -> int:
    settings = _settings(args.source, args)
    if args.to < args.from_:
        raise CliError(f"--to {args.to} is before --from {args.from_}")
    if args.from_ < settings.start_date:
        raise CliError(f"--from {args.from_} is before the first day partition {settings.start_date}")
    if args.to >= date.today():
        raise CliError(f"--to {args.to} has not ended yet (the newest partition is {date.today() - timedelta(days=1)})")
    _require_s3()
    instance = _instance()
    assets = DATA_ASSET_KEYS if args.data_only else None
    what = (
        "ingest, features, online store"
        if args.data_only
        else ("everything" if args.job == "nightly_refresh" else "pretrain; per surface to champion")
    )
    print(f"backfill: {args.job} for {args.from_} .. {args.to}, one run per day, in order", flush=True)
    _, each_day = _present_window(settings, args.from_, args.to)
    failed = [
        day
        for day in each_day
        if not run_day(instance, settings, args.job, day, what, assets=assets, trigger="backfill")
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
        "PINREC_DATA_DIR": os.environ.get("PINREC_DATA_DIR")
        or str(VAR_DIR / (getattr(args, "deployment", None) or LIVE_DATA_DIR)),
    }
    if getattr(args, "drift_day", None):
        env["PINREC_SIM_DRIFT_DAY"] = args.drift_day.isoformat()
        env["PINREC_SIM_DRIFT_KIND"] = args.drift_kind
    return env


def cmd_live(args: argparse.Namespace) -> int:
    from devstack.seaweedfs import write_env_file

    settings = _settings("simulated", extra=live_environment(args))
    from world.experiments import select_arms

    try:
        arms = select_arms(args.arms)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.external_s3:  # an S3 the operator runs (its environment is set): used as it is
        _require_s3()
        _play_live(args, settings, arms)
        return 0
    with _s3_server(settings) as s3:
        write_env_file(S3_ENV_FILE, _shared_env(s3))
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


def cmd_deployments(args: argparse.Namespace) -> int:
    from orchestration.deployments import print_deployments, remove_deployment

    if not args.remove:
        print_deployments()
        return 0
    from storage.s3 import S3Unavailable, make_client

    try:
        if args.external_s3:
            _require_s3()
            from storage.s3 import S3Settings

            s3_settings = S3Settings.from_env()
            removed = remove_deployment(args.remove, s3_settings, make_client(s3_settings))
        else:
            from devstack.seaweedfs import SeaweedFS

            with SeaweedFS(VAR_DIR / "seaweedfs") as s3:
                removed = remove_deployment(args.remove, s3.settings(), make_client(s3.settings()))
    except KeyError:
        raise CliError(f"no deployment {args.remove!r} recorded here; `pinrec-ops deployments` lists them") from None
    except (ValueError, S3Unavailable) as exc:
        raise CliError(str(exc)) from None
    print(f"removed deployment {args.remove}: " + "; ".join(removed))
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    settings = _settings(args.source, args)
    from orchestration.report import print_lookup

    print_lookup(settings, args.user)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from devstack.dagster_dev import DagsterUI
    from devstack.seaweedfs import write_env_file

    if args.live:
        args.source = "simulated"
    settings = _settings(args.source, args, live_environment(args) if args.live else None)
    from orchestration.runs import dagster_home

    home = dagster_home(VAR_DIR / "dagster" / "default")
    with _s3_server(settings) as s3:
        write_env_file(S3_ENV_FILE, _shared_env(s3))
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

    def deployment_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--deployment",
            metavar="NAME",
            help="the deployment (its own data directory var/NAME, Dagster instance and S3 prefix; default: "
            "$PINREC_DEPLOYMENT, else named after the data directory)",
        )

    def verbose_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--verbose",
            action="store_true",
            help="the full logs: every run's log lines, the libraries' banners, Feast's console output",
        )

    def days_command(p: argparse.ArgumentParser, data_only: str) -> None:
        """The options of a command that runs a span of days of a source (lifecycle, backfill)."""
        source_option(p)
        log_options(p)
        p.add_argument("--data-only", action="store_true", help=data_only)
        verbose_option(p)
        deployment_option(p)

    life = sub.add_parser("lifecycle", help="run the whole lifecycle on the embedded default")
    life.add_argument(
        "--days",
        type=positive_int,
        help="number of day partitions to run (default: the simulated world's 14 days; 35 for other "
        "sources; a parquet log's newest days unless --start)",
    )
    life.add_argument("--start", type=iso_date, help="first day (YYYY-MM-DD); default: the source's first day")
    days_command(life, "ingest and features only; no training or publication")
    life.set_defaults(func=cmd_lifecycle)

    back = sub.add_parser(
        "backfill",
        help="run a job for a range of days, one run per day (S3 from the environment)",
        description="Backfill a range of day partitions: one run of the job per day, in order, in "
        "this process, recorded in the Dagster instance like a daemon's run. Needs the "
        "S3 environment (`source var/s3.env` while `pinrec-ops ui` runs).",
    )
    back.add_argument("--from", dest="from_", type=iso_date, required=True, help="first day (YYYY-MM-DD)")
    back.add_argument("--to", type=iso_date, required=True, help="last day, inclusive (YYYY-MM-DD)")
    back.add_argument("--job", choices=("nightly_refresh", "retrain"), default="nightly_refresh")
    days_command(back, "only ingest, features and online store")
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
    verbose_option(live)
    deployment_option(live)
    live.set_defaults(func=cmd_live)

    deps = sub.add_parser(
        "deployments",
        help="list the deployments of this machine, or remove one",
        description="A deployment is one namespace: its data directory (with its Feast registry), its Dagster "
        "instance and its S3 prefix. Without options: list them. --remove NAME deletes its objects in S3 (the "
        "embedded server, or --external-s3), its data directory and its Dagster instance.",
    )
    deps.add_argument("--remove", metavar="NAME", help="remove this deployment")
    deps.add_argument("--external-s3", action="store_true", help="the S3 server of the environment")
    deps.set_defaults(func=cmd_deployments)

    look = sub.add_parser("lookup", help="print a user's online features")
    source_option(look)
    look.add_argument("--user", type=int, help="user id (default: the longest sequence of the newest day)")
    log_options(look)
    deployment_option(look)
    look.set_defaults(func=cmd_lookup)

    ui = sub.add_parser("ui", help="start the embedded S3 server and the Dagster UI with its daemon")
    source_option(ui)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--live", action="store_true", help="the closed loop's code location and data (var/live)")
    log_options(ui)
    deployment_option(ui)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output.configure(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except CliError as exc:
        print(f"pinrec-ops {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
