"""The day's serving log, stored with the day: what the system served, by which version and arm,
at which position, and what each impression got. The closed-loop simulated world provides one;
a source without one stores an empty log (the online figures then have nothing to say)."""

import dagster as dg

from assets.conventions import area_tags, code_version, owners
from assets.days import partition_day
from assets.policies import ONE_RUN_PER_DAY
from assets.resources import DataLakeResource, EventSourceResource
from events.serving_log import SERVING_LOG_COLUMNS, ServingLogTable


def serving_log_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The serving log asset on the graph's day partitions."""

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=ONE_RUN_PER_DAY,
        group_name="ingest",
        kinds={"parquet"},
        owners=owners("data"),
        tags=area_tags("data"),
        code_version=code_version(__name__, "events.serving_log", "events.sources"),
        metadata={"dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(c) for c in SERVING_LOG_COLUMNS])},
        description="The day's serving log (one row per served slot a user was shown: version, arm, position, "
        "outcome), stored with the day beside the event table; empty for a source without one.",
    )
    def serving_log(
        context: dg.AssetExecutionContext, event_source: EventSourceResource, lake: DataLakeResource
    ) -> dg.MaterializeResult:
        day = partition_day(context)
        source = event_source.open()
        log = source.serving_log(day) if hasattr(source, "serving_log") else None
        table = ServingLogTable(lake.root)
        path = table.write_day(day, log)
        stored = table.read_day(day)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(stored),
                "served_slots": len(stored),
                "users": int(stored["user_id"].nunique()),
                "arms": dg.MetadataValue.json(sorted(set(stored["arm"]))),
                "examined_share": float(stored["examined"].mean()) if len(stored) else 0.0,
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return serving_log
