"""Online store: the Feast registry applied from feature_repo/ and each day's window materialized
into the online store (sqlite by default, Redis in production)."""

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pinrec_ops.defs.data.features import FEATURE_ASSETS
from pinrec_ops.defs.days import days_in_window
from pinrec_ops.defs.partitions import daily_partitions
from pinrec_ops.defs.resources import FeastResource


@asset(
    deps=list(FEATURE_ASSETS.values()),
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="features",
    pool="feast_online_store",
    description="The Feast registry applied from feature_repo/ and each day's window materialized into the online store.",
)
def online_features(context: AssetExecutionContext, feast: FeastResource) -> MaterializeResult:
    from feature_pipeline.store import (
        apply_repo,
        materialize_days,
        offline_table_path,
        online_user_sequences,
    )

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
