"""The code location: the assets, checks and resources of `assets/` (loaded as Dagster loads a
project's defs folder: `[tool.dg.project] defs_module` in pyproject.toml; each area's
`definitions.py` holds a `@dg.definitions` function), with what runs them from
`orchestration/defs/`: jobs and schedules, sensors and the executor.

Nothing here or in `assets/` reads the environment at import: `defs` (what workspace.yaml and
`dg` load) reads the settings when Dagster loads the definitions, and `build_definitions` builds
the same graph from a `Settings` given (the CLI's runs in process, tests), so two settings make
two graphs in one process."""

from pathlib import Path

import dagster as dg

from assets.config import Settings, load_settings
from assets.data.definitions import data_definitions
from assets.lifecycle.definitions import lifecycle_definitions
from assets.online.definitions import online_definitions
from assets.operations.definitions import operations_definitions
from assets.operations.freshness import freshness_checks
from assets.resources import build_resources
from orchestration.defs import drift_sensor, executor, freshness_sensor, jobs, run_failures

# the areas of assets/, each a function of the settings (and a @dg.definitions of the defs folder)
AREAS = (data_definitions, lifecycle_definitions, online_definitions, operations_definitions)


def runs_them(settings: Settings) -> dg.Definitions:
    """The jobs and schedules of `settings`' surfaces, and the sensors."""
    scheduled = jobs.jobs_and_schedules(settings)
    [retrain] = [job for job in scheduled.jobs if job.name == "retrain"]
    sensors = dg.Definitions(
        sensors=[
            drift_sensor.outcome_drift_sensor(retrain, settings.vocabulary.drift),
            run_failures.run_failure_report,
            freshness_sensor.freshness_checks_sensor(freshness_checks(settings.surfaces)),
        ]
    )
    return dg.Definitions.merge(scheduled, sensors)


def build_definitions(settings: Settings, resources: dict | None = None) -> dg.Definitions:
    """The code location's graph for `settings`, from them alone (no environment variable is read
    for its shape): every area's assets and checks, the jobs, schedules and sensors, bound to
    `resources` (default: `build_resources(settings)`). Dagster's own executor (runs in process)."""
    return dg.Definitions.merge(
        *(area(settings) for area in AREAS),
        runs_them(settings),
        dg.Definitions(resources=build_resources(settings) if resources is None else resources),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as Dagster loads it (webserver, daemon, run workers, `dg`): the settings
    are read from the environment now, by each area of the defs folder and here."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        runs_them(load_settings()),
        executor.executor(),
    )
