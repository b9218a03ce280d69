"""Jobs and their schedules."""

from datetime import timedelta

import dagster as dg

from pinrec_ops.defs.config import SETTINGS

DATA_ASSETS = dg.AssetSelection.groups("ingest", "features")
SURFACE_ASSETS = dg.AssetSelection.groups(*SETTINGS.surfaces)

nightly_refresh = dg.define_asset_job(
    name="nightly_refresh",
    selection=DATA_ASSETS | SURFACE_ASSETS,
    description="One day partition: ingest and validate events, features, then per surface: fine-tune, "
                "publish the index, canary against the champion, promote.",
)

retrain = dg.define_asset_job(
    name="retrain",
    selection=dg.AssetSelection.assets("pretrained_model") | SURFACE_ASSETS,
    description="Pretrain on all surfaces, then fine-tune, publish, canary and promote each surface for the "
                "given day. The drift sensor's target; weekly by schedule.",
)

nightly_refresh_schedule = dg.build_schedule_from_partitioned_job(
    nightly_refresh,
    name="nightly_refresh_schedule",
    hour_of_day=2,
    description="Every night at 02:00 UTC, refresh the day that just ended.",
)


@dg.schedule(job=retrain, cron_schedule="0 4 * * 0", execution_timezone="UTC",
             description="Sundays at 04:00 UTC: pretrain again and refresh every surface for yesterday.")
def weekly_retrain_schedule(context: dg.ScheduleEvaluationContext):
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"weekly-{day}", partition_key=day)
