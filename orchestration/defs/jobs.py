"""Jobs and their schedules, for a deployment's settings (`jobs_and_schedules`).

`nightly_refresh` refreshes one day: ingest, features, online store, then per surface fine-tune,
publish, canary and promote. `retrain` pretrains again (holding the day out) and then refreshes
every surface for that day. Both run one day partition per run; a backfill of a range runs one
per day, in order. The schedules ask the source whether the day has arrived and skip with the
reason when it has not, so a tick never fails and never repeats a day."""

from datetime import date, timedelta

import dagster as dg

from assets.config import Settings
from assets.resources import EventSourceResource, S3Resource

DATA_ASSETS = dg.AssetSelection.groups("ingest", "features", "online")


def jobs_and_schedules(settings: Settings) -> dg.Definitions:
    """The two jobs over the settings' surfaces and their schedules (no day before the first
    partition, `settings.start_date`)."""
    surface_assets = dg.AssetSelection.groups(*settings.surfaces)
    nightly_refresh = dg.define_asset_job(
        name="nightly_refresh",
        selection=DATA_ASSETS | surface_assets,
        description="One day partition: ingest and validate events, features, online store, then per surface: "
        "fine-tune, publish the index, canary against the champion, promote.",
        tags={"pinrec/job": "nightly_refresh"},
    )
    # In the online canary mode, promotion follows the online trial of the nightly run; a retrain ends at
    # the release of its candidate as the next canary.
    promotion_by_trial = dg.AssetSelection.assets(
        *[dg.AssetKey([s, step]) for s in settings.surfaces for step in ("canary_trial", "champion")]
    )
    retrain = dg.define_asset_job(
        name="retrain",
        selection=dg.AssetSelection.assets("pretrained_model")
        | (surface_assets - promotion_by_trial if settings.online_canary else surface_assets),
        description="Pretrain on all surfaces' days before the partition's day, then fine-tune, publish, canary and "
        "promote each surface for that day. The drift sensor's target; weekly by schedule.",
        tags={"pinrec/job": "retrain"},
    )
    schedules = [
        day_schedule(
            nightly_refresh,
            "nightly_refresh_schedule",
            "0 2 * * *",
            "Every night at 02:00 UTC: refresh the day that just ended, once its data has arrived "
            "(the tick skips with the reason otherwise).",
            settings.start_date,
            run_key="nightly",
            trigger="schedule",
        ),
        day_schedule(
            retrain,
            "weekly_retrain_schedule",
            "0 4 * * 0",
            "Sundays at 04:00 UTC: pretrain again and refresh every surface for the day that just "
            "ended (Saturday), once its data has arrived.",
            settings.start_date,
            run_key="weekly",
            trigger="weekly_schedule",
        ),
    ]
    return dg.Definitions(jobs=[nightly_refresh, retrain], schedules=schedules)


def day_schedule(
    job, name: str, cron: str, description: str, first_day: date, *, run_key: str, trigger: str
) -> dg.ScheduleDefinition:
    """A schedule of `job` (UTC) that requests a run of the day that ended before each tick, once
    the source has it (`request_for_day`), with run key `<run_key>-<day>` and tag
    `pinrec/trigger: <trigger>`."""

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone="UTC", description=description)
    def schedule(context: dg.ScheduleEvaluationContext, event_source: EventSourceResource, s3: S3Resource):
        day = (context.scheduled_execution_time - timedelta(days=1)).date()
        return request_for_day(first_day, day, f"{run_key}-{day}", event_source, s3, **{"pinrec/trigger": trigger})

    return schedule


def request_for_day(
    first_day: date,
    day: date,
    run_key: str,
    event_source: EventSourceResource,
    s3: S3Resource,
    **tags: str,
):
    """A run request for `day` if the source has it (and it is not before the first partition,
    `first_day`), else the reason it does not."""
    if day < first_day:
        return dg.SkipReason(f"{day} is before the first day partition {first_day}")
    client = s3.client() if (event_source.parquet_location or "").startswith("s3://") else None
    arrived, reason = event_source.day_status(day, s3_client=client)
    if not arrived:
        return dg.SkipReason(reason)
    return dg.RunRequest(run_key=run_key, partition_key=day.isoformat(), tags=tags)
