"""Jobs and their schedules.

`nightly_refresh` refreshes one day: ingest, features, online store, then per surface fine-tune,
publish, canary and promote. `retrain` pretrains again (holding the day out) and then refreshes
every surface for that day. Both run one day partition per run; a backfill of a range runs one
per day, in order. The schedules ask the source whether the day has arrived and skip with the
reason when it has not, so a tick never fails and never repeats a day."""

from datetime import date, timedelta

import dagster as dg

from assets.config import SETTINGS
from assets.resources import EventSourceResource, S3Resource

DATA_ASSETS = dg.AssetSelection.groups("ingest", "features", "online")
SURFACE_ASSETS = dg.AssetSelection.groups(*SETTINGS.surfaces)

nightly_refresh = dg.define_asset_job(
    name="nightly_refresh",
    selection=DATA_ASSETS | SURFACE_ASSETS,
    description="One day partition: ingest and validate events, features, online store, then per surface: "
    "fine-tune, publish the index, canary against the champion, promote.",
    tags={"pinrec/job": "nightly_refresh"},
)

# In the online canary mode, promotion follows the online trial of the nightly run; a retrain ends at
# the release of its candidate as the next canary.
PROMOTION_BY_TRIAL = dg.AssetSelection.assets(
    *[dg.AssetKey([s, step]) for s in SETTINGS.surfaces for step in ("canary_trial", "champion")]
)
retrain = dg.define_asset_job(
    name="retrain",
    selection=dg.AssetSelection.assets("pretrained_model")
    | (SURFACE_ASSETS - PROMOTION_BY_TRIAL if SETTINGS.online_canary else SURFACE_ASSETS),
    description="Pretrain on all surfaces' days before the partition's day, then fine-tune, publish, canary and "
    "promote each surface for that day. The drift sensor's target; weekly by schedule.",
    tags={"pinrec/job": "retrain"},
)


def request_for_day(
    context: dg.ScheduleEvaluationContext,
    day: date,
    run_key: str,
    event_source: EventSourceResource,
    s3: S3Resource,
    **tags: str,
):
    """A run request for `day` if the source has it, else the reason it does not."""
    if day < SETTINGS.start_date:
        return dg.SkipReason(f"{day} is before the first day partition {SETTINGS.start_date}")
    client = s3.client() if (event_source.parquet_location or "").startswith("s3://") else None
    arrived, reason = event_source.day_status(day, s3_client=client)
    if not arrived:
        return dg.SkipReason(reason)
    return dg.RunRequest(run_key=run_key, partition_key=day.isoformat(), tags=tags)


@dg.schedule(
    job=nightly_refresh,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Every night at 02:00 UTC: refresh the day that just ended, once its data has arrived "
    "(the tick skips with the reason otherwise).",
)
def nightly_refresh_schedule(context: dg.ScheduleEvaluationContext, event_source: EventSourceResource, s3: S3Resource):
    day = (context.scheduled_execution_time - timedelta(days=1)).date()
    return request_for_day(context, day, f"nightly-{day}", event_source, s3, **{"pinrec/trigger": "schedule"})


@dg.schedule(
    job=retrain,
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
    description="Sundays at 04:00 UTC: pretrain again and refresh every surface for the day that just "
    "ended (Saturday), once its data has arrived.",
)
def weekly_retrain_schedule(context: dg.ScheduleEvaluationContext, event_source: EventSourceResource, s3: S3Resource):
    day = (context.scheduled_execution_time - timedelta(days=1)).date()
    return request_for_day(context, day, f"weekly-{day}", event_source, s3, **{"pinrec/trigger": "weekly_schedule"})
