"""Online store: the Feast registry applied from feature_repo/ and the day's window materialized
into the online store (sqlite by default, Redis in production)."""

from pathlib import Path

import dagster as dg

from assets.conventions import (
    area_tags,
    code_version,
    online_store_kind,
    owners,
)
from assets.data.features import FEATURE_ASSETS
from assets.days import partition_day
from assets.policies import ONE_RUN_PER_DAY
from assets.resources import FeastResource, VocabularyResource


def online_features_asset(partitions: dg.PartitionsDefinition, feast_config: Path) -> dg.AssetsDefinition:
    """The online store asset on the graph's day partitions; its kinds name the online store of
    the Feast profile `feast_config`."""

    @dg.asset(
        deps=list(FEATURE_ASSETS.values()),
        partitions_def=partitions,
        backfill_policy=ONE_RUN_PER_DAY,
        group_name="features",
        pool="feast_online_store",
        kinds={"feast", online_store_kind(feast_config)},
        owners=owners("data"),
        tags=area_tags("data"),
        code_version=code_version(__name__, "feature_pipeline.store"),
        description="The Feast registry applied from feature_repo/ and the day's window materialized into the online "
        "store, which serving reads.",
    )
    def online_features(
        context: dg.AssetExecutionContext, feast: FeastResource, vocabulary: VocabularyResource
    ) -> dg.MaterializeResult:
        import time

        import pandas as pd

        from feature_pipeline.store import (
            apply_repo,
            materialize_days,
            offline_table_path,
            online_user_sequences,
        )

        day = partition_day(context)
        store = feast.store()
        vocab = vocabulary.load()
        applied = apply_repo(store, vocab.codes, vocab.label)
        began = time.monotonic()
        materialize_days(store, day, day)
        seconds = time.monotonic() - began
        meta = {
            "day": day.isoformat(),
            "materialize_seconds": round(seconds, 2),
            "feature_views": dg.MetadataValue.json(applied["feature_views"]),
            "feature_services": dg.MetadataValue.json(applied["feature_services"]),
            "online_store": str(store.config.online_store.type),
        }
        # Show an operator what serving will read: a user of the day, as the online store serves them.
        day_file = offline_table_path(feast.settings(), "user_sequence", day)
        if day_file.exists():
            users = pd.read_parquet(day_file, columns=["user_id"])["user_id"]
            meta["users_materialized"] = len(users)
            if len(users):
                row = online_user_sequences(store, [int(users.iloc[0])]).iloc[0]
                meta.update(
                    {
                        "sample_user": int(row["user_id"]),
                        "sample_sequence_length": int(row["seq_length"]),
                        "sample_last_items": dg.MetadataValue.json(list(row["seq_item_ids"])[-10:]),
                    }
                )
        return dg.MaterializeResult(metadata=meta)

    return online_features
