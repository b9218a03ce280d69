"""Features: the day's offline tables of the three Feast feature views (parquet for Feast's file
offline store), one file per view and day."""

import dagster as dg

from assets.conventions import area_tags, code_version, owners
from assets.days import partition_day
from assets.policies import ONE_RUN_PER_DAY
from assets.resources import (
    DataLakeResource,
    FeastResource,
    VocabularyResource,
)

FEATURE_ASSETS = {
    "user_sequence": "user_sequence_features",
    "item_stats": "item_stats_features",
    "item_surface_stats": "item_surface_stats_features",
}
FEATURES_CODE = code_version(
    __name__,
    "feature_pipeline.tables",
    "feature_pipeline.engines",
    "feature_pipeline.store",
    "events.contract",
    "events.vocabulary",
)


def feature_tables_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The feature tables on the graph's day partitions."""

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                asset_name,
                deps=["events"],
                group_name="features",
                kinds={"parquet", "feast"},
                owners=owners("data"),
                tags=area_tags("data", feature_view=view),
                code_version=FEATURES_CODE,
                description=f"Offline table of the Feast feature view `{view}`, one parquet file per day, "
                "stamped with each entity's last event of the day.",
            )
            for view, asset_name in FEATURE_ASSETS.items()
        ],
        partitions_def=partitions,
        backfill_policy=ONE_RUN_PER_DAY,
        can_subset=False,
    )
    def feature_tables(
        context: dg.AssetExecutionContext, lake: DataLakeResource, feast: FeastResource, vocabulary: VocabularyResource
    ):
        from feature_pipeline.store import (
            codes_path,
            offline_table_path,
            write_offline_tables,
        )

        day = partition_day(context)
        vocab = vocabulary.record()  # the tables' codes: recorded in the ledger beside them
        tables = lake.feature_tables(day, vocab.codes)  # on the configured engine (PINREC_FEATURE_ENGINE)
        write_offline_tables(feast.settings(), day, tables)
        context.log.info(f"{day}: " + ", ".join(f"{v} {len(df)} rows" for v, df in tables.items()))
        for view, asset_name in FEATURE_ASSETS.items():
            df = tables[view]
            meta = {
                "dagster/row_count": len(df),
                "rows": len(df),
                "path": dg.MetadataValue.path(str(offline_table_path(feast.settings(), view, day))),
                "codes": dg.MetadataValue.json(vocab.codes.mapping()),
                "codes_ledger": dg.MetadataValue.path(str(codes_path(feast.settings().data_dir))),
            }
            if view == "user_sequence" and len(df):
                meta["mean_sequence_length"] = float(df["seq_length"].mean())
            yield dg.MaterializeResult(asset_key=asset_name, metadata=meta)

    return feature_tables
