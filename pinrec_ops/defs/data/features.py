"""Features: the day's offline feature tables (parquet for Feast's file store)."""


from dagster import (
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from feature_pipeline.tables import day_feature_tables
from pinrec_ops.defs.days import days_in_window
from pinrec_ops.defs.partitions import daily_partitions
from pinrec_ops.defs.resources import DataLakeResource, FeastResource

FEATURE_ASSETS = {
    "user_sequence": "user_sequence_features",
    "item_stats": "item_stats_features",
    "item_surface_stats": "item_surface_stats_features",
}


@multi_asset(
    specs=[
        AssetSpec(asset_name, deps=["events"], group_name="features",
                  description=f"Offline table of the Feast feature view `{view}`, one parquet file per day.")
        for view, asset_name in FEATURE_ASSETS.items()
    ],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    can_subset=False,
)
def feature_tables(context: AssetExecutionContext, lake: DataLakeResource, feast: FeastResource):
    from feature_pipeline.store import write_offline_tables

    table, settings = lake.table(), feast.settings()
    rows = {view: 0 for view in FEATURE_ASSETS}
    for day in days_in_window(context.partition_time_window):
        tables = day_feature_tables(table, day)
        write_offline_tables(settings, day, tables)
        for view, df in tables.items():
            rows[view] += len(df)
        context.log.info(f"{day}: " + ", ".join(f"{v} {len(df)} rows" for v, df in tables.items()))
    for view, asset_name in FEATURE_ASSETS.items():
        yield MaterializeResult(
            asset_key=asset_name,
            metadata={"rows": rows[view], "path": MetadataValue.path(str(settings.data_dir / "offline" / view))},
        )
