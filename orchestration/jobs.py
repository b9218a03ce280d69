"""Jobs and schedules."""

from dagster import (
    AssetSelection,
    RunRequest,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from orchestration.config import load_settings

SURFACES = load_settings().surfaces
DATA_ASSETS = AssetSelection.groups("ingest", "features")
SURFACE_ASSETS = AssetSelection.groups(*SURFACES)

nightly_refresh = define_asset_job(
    name="nightly_refresh",
    selection=DATA_ASSETS | SURFACE_ASSETS,
    description="One day partition: ingest and validate events, features, then per surface: fine-tune, "
                "publish the index, canary against the champion, promote.",
)

retrain = define_asset_job(
    name="retrain",
    selection=AssetSelection.assets("pretrained_model") | SURFACE_ASSETS,
    description="Pretrain on all surfaces, then fine-tune, publish, canary and promote each surface for the "
                "given day. The drift sensor's target; weekly by schedule.",
)

nightly_refresh_schedule = build_schedule_from_partitioned_job(
    nightly_refresh,
    name="nightly_refresh_schedule",
    hour_of_day=2,
    description="Every night at 02:00 UTC, refresh the day that just ended.",
)


@schedule(job=retrain, cron_schedule="0 4 * * 0", execution_timezone="UTC",
          description="Sundays at 04:00 UTC: pretrain again and refresh every surface for yesterday.")
def weekly_retrain_schedule(context: ScheduleEvaluationContext):
    from datetime import timedelta

    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return RunRequest(run_key=f"weekly-{day}", partition_key=day)
