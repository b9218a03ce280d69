"""The code location: the assets, checks and resources of `assets/` (loaded as Dagster loads a
project's defs folder: `[tool.dg.project] defs_module` in pyproject.toml), with what runs them
from `orchestration/defs/`: jobs and schedules, sensors and the executor."""

from pathlib import Path

import dagster as dg

from orchestration.defs import drift_sensor, executor, freshness_sensor, jobs, run_failures


@dg.definitions
def defs() -> dg.Definitions:
    runs_them = dg.Definitions(
        jobs=[jobs.nightly_refresh, jobs.retrain],
        schedules=[jobs.nightly_refresh_schedule, jobs.weekly_retrain_schedule],
        sensors=[
            drift_sensor.outcome_drift_sensor,
            run_failures.run_failure_report,
            freshness_sensor.freshness_checks_sensor,
        ],
    )
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent), runs_them, executor.executor()
    )
