"""Ingest: read each day from the configured source, validate it against the event contract,
write good rows to the event table and broken rows to the quarantine, archive both to S3."""


from collections import Counter

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset_check,
    multi_asset,
)
from pydantic import Field

from events.ingest import validate_events
from events.table import file_sha256
from pinrec_ops.defs.config import SETTINGS
from pinrec_ops.defs.days import days_in_window
from pinrec_ops.defs.metadata import stacked_bars
from pinrec_ops.defs.partitions import daily_partitions
from pinrec_ops.defs.policies import S3_RETRY
from pinrec_ops.defs.resources import DataLakeResource, EventSourceResource, S3Resource


class BadRowCheckConfig(Config):
    max_bad_fraction: float = Field(
        default=SETTINGS.max_bad_fraction,
        description="The bad_row_fraction check fails (and blocks downstream assets) above this.",
    )


def _markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@multi_asset(
    specs=[
        AssetSpec("events", group_name="ingest", description="Contract-valid events, one parquet file per day."),
        AssetSpec("event_quarantine", group_name="ingest", description="Rows that failed validation, with the failing checks named per row."),
    ],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    can_subset=False,
    retry_policy=S3_RETRY,
)
def ingest_events(
    context: AssetExecutionContext,
    event_source: EventSourceResource,
    lake: DataLakeResource,
    s3: S3Resource,
):
    source = event_source.open(s3_client=s3.client())
    table = lake.table()
    client = s3.client()
    per_day, reasons = [], Counter()
    total_in = total_good = total_bad = 0
    uris = []
    for day in days_in_window(context.partition_time_window):
        raw = source.read_day(day)
        result = validate_events(raw, day)
        table.write_day(day, result.good, result.quarantine)
        for path in (table.events_path(day), table.quarantine_path(day)):
            key = s3.key("data", event_source.source, path.relative_to(table.root).as_posix())
            client.upload_file(str(path), s3.bucket, key)
            uris.append(f"s3://{s3.bucket}/{key}")
        reasons.update(result.reason_counts())
        total_in += result.input_rows
        total_good += len(result.good)
        total_bad += len(result.quarantine)
        per_day.append([day.isoformat(), result.input_rows, len(result.good), len(result.quarantine),
                        f"{result.bad_fraction:.4f}", file_sha256(table.events_path(day))[:12]])
        context.log.info(f"{day}: {result.input_rows} rows in, {len(result.good)} good, {len(result.quarantine)} quarantined")
    assert total_good + total_bad == total_in, "ingestion lost rows"  # the contract's promise
    bad_fraction = total_bad / total_in if total_in else 0.0
    days = days_in_window(context.partition_time_window)
    yield MaterializeResult(
        asset_key="events",
        metadata={
            "source": event_source.source,
            "days": len(days),
            "rows_in": total_in,
            "rows_good": total_good,
            "rows_quarantined": total_bad,
            "bad_fraction": bad_fraction,
            "rows_per_day": stacked_bars(
                {"good": [r[2] for r in per_day], "quarantined": [r[3] for r in per_day]},
                [r[0] for r in per_day], "rows per day", "rows"),
            "per_day": MetadataValue.md(_markdown_table(["day", "rows in", "good", "quarantined", "bad fraction", "sha256"], per_day[-60:])),
            "path": MetadataValue.path(str(table.root / "events")),
            "s3_archive": MetadataValue.url(uris[0].rsplit("/", 2)[0]) if uris else "",
        },
    )
    yield MaterializeResult(
        asset_key="event_quarantine",
        metadata={
            "rows_quarantined": total_bad,
            "reasons": MetadataValue.md(_markdown_table(["check failed", "rows"], [[k, v] for k, v in reasons.most_common(30)]) if reasons else "no rows quarantined"),
            "path": MetadataValue.path(str(table.root / "quarantine")),
        },
    )


@asset_check(
    asset="events",
    blocking=True,
    description="Fails (and blocks the feature assets) when the quarantined share of the run's input rows passes the threshold.",
)
def bad_row_fraction(context: AssetCheckExecutionContext, config: BadRowCheckConfig, lake: DataLakeResource) -> AssetCheckResult:
    table = lake.table()
    days = days_in_window(context.op_execution_context.partition_time_window)
    good = sum(table.row_count(table.events_path(day)) for day in days)
    bad = sum(table.row_count(table.quarantine_path(day)) for day in days)
    total = good + bad
    fraction = bad / total if total else 0.0
    return AssetCheckResult(
        passed=fraction <= config.max_bad_fraction,
        severity=AssetCheckSeverity.ERROR,
        metadata={"bad_fraction": fraction, "threshold": config.max_bad_fraction, "rows_in": total, "rows_quarantined": bad,
                  "days": len(days)},
        description=f"{bad} of {total} rows quarantined ({fraction:.2%}); threshold {config.max_bad_fraction:.2%}",
    )
