"""Features: the day's offline feature tables (parquet for Feast's file store), then the
registry applied and the day's window materialized into the online store."""


from dagster import (
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from assets.days import days_in_window
from feature_pipeline.tables import day_feature_tables
from orchestration.partitions import daily_partitions
from orchestration.resources import DataLakeResource, FeastResource

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


@asset(
    deps=list(FEATURE_ASSETS.values()),
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="features",
    pool="feast_online_store",
    description="The Feast registry applied from feature_repo/ and each day's window materialized into the online store.",
)
def online_features(context: AssetExecutionContext, feast: FeastResource) -> MaterializeResult:
    from feature_pipeline.store import apply_repo, materialize_days, offline_table_path, online_user_sequences

    store = feast.store()
    applied = apply_repo(store)
    days = days_in_window(context.partition_time_window)
    materialize_days(store, days[0], days[-1])  # one pass over the run's window
    # Show an operator what serving will read: the most recent user of the last day.
    sample = {}
    last_file = offline_table_path(feast.settings(), "user_sequence", days[-1])
    if last_file.exists():
        import pandas as pd

        users = pd.read_parquet(last_file, columns=["user_id"])["user_id"]
        if len(users):
            row = online_user_sequences(store, [int(users.iloc[0])]).iloc[0]
            sample = {
                "sample_user": int(row["user_id"]),
                "sample_sequence_length": int(row["seq_length"]),
                "sample_last_items": MetadataValue.json(list(row["seq_item_ids"])[-10:]),
            }
    return MaterializeResult(
        metadata={
            "days_materialized": len(days),
            "window": f"{days[0]} .. {days[-1]}",
            "feature_views": MetadataValue.json(applied["feature_views"]),
            "feature_services": MetadataValue.json(applied["feature_services"]),
            "online_store": str(store.config.online_store.type),
            **sample,
        }
    )
