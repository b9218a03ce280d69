"""Jobs and schedules."""

from dagster import AssetSelection, build_schedule_from_partitioned_job, define_asset_job

DATA_ASSETS = AssetSelection.groups("ingest", "features")

nightly_refresh = define_asset_job(
    name="nightly_refresh",
    selection=DATA_ASSETS,
    description="One day partition: ingest and validate events, build feature tables, materialize online features.",
)

nightly_refresh_schedule = build_schedule_from_partitioned_job(
    nightly_refresh,
    name="nightly_refresh_schedule",
    hour_of_day=2,
    description="Every night at 02:00 UTC, refresh the day that just ended.",
)
