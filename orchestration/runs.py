"""Runs of the code location's jobs in this process: the main command, the backfill command, the
closed-loop runner, tests and benchmarks. A run of `nightly_refresh` or `retrain` for one day is
recorded in the instance as a run of that job, with its partition and tags, exactly as the daemon
would launch it, so the UI shows it under Jobs, in the run history and on the timeline.

Each such run carries the tag `pinrec/process` (`pid@host` of the process executing it). A run
whose process died (SIGKILL, out of memory, a lost machine) stays STARTED in the instance and
keeps the pool slots its steps claimed, so the next training step of any run would wait for a
slot forever: `fail_orphaned_runs` marks such runs failed and frees their slots, as Dagster's
run monitoring does for the runs the daemon launched. The closed-loop runner and the CLI call it
when they open the instance."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from assets.config import Settings
from orchestration.definitions import build_definitions

CODE_LOCATION = "pinrec_ops"  # workspace.yaml's location_name
# The label the webserver and the daemon put on the runs they launch (repository@location); the UI
# lists a job's runs by it, so a run executed here carries it too.
REPOSITORY_LABEL = {".dagster/repository": f"__repository__@{CODE_LOCATION}"}
PROCESS_TAG = "pinrec/process"  # pid@host of the process that executes a run in process
UNFINISHED = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)

EMBEDDED_INSTANCE = (
    "# Embedded default: SQLite run, event-log and schedule storage in this folder.\n"
    "telemetry:\n  enabled: false\n"
    "concurrency:\n  pools:\n    default_limit: 1\n"
)


def code_location(settings: Settings) -> dg.Definitions:
    """The code location's graph for `settings` with their resources (`build_definitions`: tens of
    milliseconds, so built for each run)."""
    return build_definitions(settings)


def dagster_home(default: Path) -> Path:
    """$DAGSTER_HOME, else `default`; created with the embedded default's instance config."""
    home = Path(os.environ.get("DAGSTER_HOME", default)).absolute()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(EMBEDDED_INSTANCE)
    return home


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def present_days(settings, days: list[date], s3_client=None) -> list[date]:
    """`days` without the ones the log has no events for: a missing day is data, not a failure."""
    from assets.resources import build_resources

    missing = set(build_resources(settings)["event_source"].missing_days(days, s3_client=s3_client))
    return [d for d in days if d not in missing]


def each_present_day(days: list[date], present: list[date]):
    """The present days in order, with a line `D: no events in the log, skipped` where a missing
    day falls."""
    for day in days:
        if day in present:
            yield day
        else:
            print(f"  {day}: no events in the log, skipped", flush=True)


def asset_keys(keys: Iterable[str]) -> list[dg.AssetKey]:
    """Asset keys as the CLI writes them ("events", "homefeed/champion")."""
    return [dg.AssetKey.from_user_string(k) for k in keys]


def run_job(
    job_name: str,
    day: date,
    instance: dg.DagsterInstance,
    *,
    settings: Settings,
    assets: Sequence[str] | None = None,
    resources: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping | None = None,
    raise_on_error: bool = False,
) -> dg.ExecuteInProcessResult:
    """One run of job `job_name` of the graph of `settings` for day partition `day` (optionally a
    subset of its assets; the checks of the selected assets run too). `resources` replace those of
    the settings (tests, benchmarks: a smaller world, another bucket)."""
    defs = code_location(settings) if resources is None else with_resources(settings, resources)
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance,
        partition_key=day.isoformat(),
        asset_selection=asset_keys(assets) if assets else None,
        tags={**REPOSITORY_LABEL, **process_tag(), **(tags or {})},
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def process_tag() -> dict[str, str]:
    return {PROCESS_TAG: f"{os.getpid()}@{socket.gethostname()}"}


def _process_gone(tag: str, created: float) -> bool:
    """Whether the process `pid@host` that created a run at `created` (epoch seconds) is gone: no
    such pid here, or the pid now belongs to a process started after the run (pid reuse)."""
    import psutil

    pid, _, host = tag.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's run: not ours to judge
    try:
        process = psutil.Process(int(pid))
        return process.status() == psutil.STATUS_ZOMBIE or process.create_time() > created + 1.0
    except psutil.NoSuchProcess:
        return True


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every unfinished in-process run of this machine whose process is gone, and free
    the pool slots its steps held (module docstring). Returns their run ids."""
    orphaned = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(UNFINISHED))):
        run, tag = record.dagster_run, record.dagster_run.tags.get(PROCESS_TAG)
        created = record.create_timestamp.timestamp() if record.create_timestamp else time.time()
        if tag is None or not _process_gone(tag, created):
            continue
        instance.report_run_failed(
            run,
            f"the process that ran it ({tag}) is gone (killed or crashed mid-run); "
            "marked failed and its pool slots freed by pinrec-ops",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        orphaned.append(run.run_id)
    return orphaned


def with_resources(settings: Settings, resources: Mapping[str, object]) -> dg.Definitions:
    """The graph of `settings` bound to other resources."""
    return build_definitions(settings, dict(resources))


def materialize_in_process(
    keys: list[str],
    resources: dict,
    instance: dg.DagsterInstance,
    *,
    settings: Settings,
    partition: date | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """An ad-hoc run of a selection of assets of the graph of `settings` (tests, benchmarks): `keys`
    as the CLI writes them; the checks of the selected assets run too."""
    defs = code_location(settings)
    selection = dg.AssetSelection.assets(*asset_keys(keys))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(selection.resolve(defs.resolve_asset_graph()))
    )
    return job.execute_in_process(
        instance=instance,
        resources=resources,
        partition_key=partition.isoformat() if partition else None,
        raise_on_error=raise_on_error,
    )
