"""Ingest: read one day from the configured source, validate it against the event contract,
write good rows to the event table and broken rows to the quarantine, archive both to S3.

Each day partition is its own run (a backfill of a range runs one per day), so every partition's
metadata is that day's own figures."""

from collections import Counter

import dagster as dg
from pydantic import Field

from assets.conventions import area_tags, code_version, owners, with_defaults
from assets.days import partition_day
from assets.metadata import column_schema, table_metadata
from assets.policies import ONE_RUN_PER_DAY, S3_RETRY
from assets.resources import (
    DataLakeResource,
    EventSourceResource,
    S3Resource,
    VocabularyResource,
)
from events.ingest import NoEventsError, check_rows_conserved, validate_events
from events.ingest import bad_row_fraction as day_bad_fraction
from events.table import file_sha256
from events.vocabulary import Vocabulary

INGEST_CODE = code_version(
    __name__,
    "events.contract",
    "events.ingest",
    "events.table",
    "events.sources",
    "world.simulator",
    "events.vocabulary",
)

QUARANTINE_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn("input_row", "int64", description="row number in the day's input"),
        dg.TableColumn("reason", "string", description="every failed check, named (e.g. `surface: isin(...)`)"),
        dg.TableColumn("raw", "string", description="the row's original values, as JSON"),
    ]
)


class BadRowCheckConfig(dg.Config):
    max_bad_fraction: float = Field(
        default=0.01,
        description="The bad_row_fraction check fails (and blocks downstream assets) above this (the deployment's "
        "default: PINREC_MAX_BAD_FRACTION).",
    )


def ingest_events_asset(partitions: dg.PartitionsDefinition, deployment_vocabulary: Vocabulary) -> dg.AssetsDefinition:
    """Ingestion on the graph's day partitions; the events' column schema is the deployment's
    vocabulary's."""

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                "events",
                group_name="ingest",
                kinds={"parquet", "pandera", "s3"},
                owners=owners("data"),
                tags=area_tags("data"),
                code_version=INGEST_CODE,
                description="Contract-valid events of the day, one parquet file per day (archived to S3).",
                metadata={
                    "dagster/column_schema": column_schema(deployment_vocabulary.event_schema()),
                    "vocabulary": deployment_vocabulary.label,
                },
            ),
            dg.AssetSpec(
                "event_quarantine",
                group_name="ingest",
                kinds={"parquet", "s3"},
                owners=owners("data"),
                tags=area_tags("data"),
                code_version=INGEST_CODE,
                description="The day's rows that failed validation, with every failing check named per row.",
                metadata={"dagster/column_schema": QUARANTINE_COLUMNS},
            ),
        ],
        partitions_def=partitions,
        backfill_policy=ONE_RUN_PER_DAY,
        can_subset=False,
        retry_policy=S3_RETRY,
    )
    def ingest_events(
        context: dg.AssetExecutionContext,
        event_source: EventSourceResource,
        lake: DataLakeResource,
        s3: S3Resource,
        vocabulary: VocabularyResource,
    ):
        day = partition_day(context)
        client = s3.client()
        source = event_source.open(s3_client=client)
        table = lake.table()
        vocab = vocabulary.record()  # the codes ledger is recorded with the data from its first day on
        raw = source.read_day(day)
        result = validate_events(raw, day, vocab)
        check_rows_conserved(result.input_rows, len(result.good), len(result.quarantine), f"ingestion of {day}")
        table.write_day(day, result.good, result.quarantine)  # NoEventsError for an empty day: old files kept
        files = table.day_files(day)  # the two files of one commit, archived together
        uris = []
        for path, public in ((files.events, table.events_path(day)), (files.quarantine, table.quarantine_path(day))):
            key = s3.key("data", event_source.source, public.relative_to(table.root).as_posix())
            client.upload_file(str(path), s3.bucket, key)
            uris.append(f"s3://{s3.bucket}/{key}")
        context.log.info(
            f"{day}: {result.input_rows} rows in, {len(result.good)} good, {len(result.quarantine)} quarantined"
        )
        engaged = result.good[result.good["outcome"] != vocab.impression]  # every event but impressions
        yield dg.MaterializeResult(
            asset_key="events",
            metadata={
                "source": event_source.source,
                "vocabulary": vocab.label,
                "dagster/row_count": len(result.good),
                "rows_in": result.input_rows,
                "rows_good": len(result.good),
                "rows_quarantined": len(result.quarantine),
                "bad_fraction": result.bad_fraction,
                "users": int(result.good["user_id"].nunique()),
                "items": int(result.good["item_id"].nunique()),
                "engagements": len(engaged),
                "outcomes": table_metadata(
                    [
                        {"surface": s, "outcome": o, "rows": int(n)}
                        for (s, o), n in result.good.groupby(["surface", "outcome"]).size().items()
                    ],
                    {"surface": "string", "outcome": "string", "rows": "int"},
                ),
                "sha256": file_sha256(files.events)[:16],
                "path": dg.MetadataValue.path(str(table.events_path(day))),
                "s3_archive": dg.MetadataValue.url(uris[0]),
            },
        )
        reasons = Counter(result.reason_counts())
        yield dg.MaterializeResult(
            asset_key="event_quarantine",
            metadata={
                "dagster/row_count": len(result.quarantine),
                "rows_quarantined": len(result.quarantine),
                "reasons": table_metadata(
                    [{"check_failed": k, "rows": v} for k, v in reasons.most_common(30)],
                    {"check_failed": "string", "rows": "int"},
                ),
                "path": dg.MetadataValue.path(str(table.quarantine_path(day))),
            },
        )

    return ingest_events


def bad_row_fraction_check(max_bad_fraction: float) -> dg.AssetChecksDefinition:
    """The bad-row check, its threshold defaulting to the deployment's (PINREC_MAX_BAD_FRACTION)."""
    Config = with_defaults(BadRowCheckConfig, max_bad_fraction=max_bad_fraction)

    @dg.asset_check(
        asset="events",
        blocking=True,
        description="Fails (and blocks the feature assets) when the quarantined share of the day's input rows "
        "passes the threshold.",
    )
    def bad_row_fraction(
        context: dg.AssetCheckExecutionContext, config: Config, lake: DataLakeResource
    ) -> dg.AssetCheckResult:
        table = lake.table()
        day = partition_day(context.op_execution_context)
        files = table.day_files(day)
        good, bad = table.row_count(files.events), table.row_count(files.quarantine)
        total = good + bad
        try:
            fraction = day_bad_fraction(good, bad, day)
        except NoEventsError as exc:  # 0/0 is an outage upstream, not 0% bad
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=str(exc),
                metadata={"rows_in": 0, "rows_quarantined": 0},
            )
        return dg.AssetCheckResult(
            passed=fraction <= config.max_bad_fraction,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "bad_fraction": fraction,
                "threshold": config.max_bad_fraction,
                "margin": config.max_bad_fraction - fraction,
                "rows_in": total,
                "rows_quarantined": bad,
            },
            description=(
                f"{day}: {bad} of {total} rows quarantined ({fraction:.2%}); threshold {config.max_bad_fraction:.2%}"
            ),
        )

    return bad_row_fraction
