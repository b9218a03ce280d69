"""The data area's definitions for a deployment's settings: ingestion and its check, the feature
tables, the online store and the serving log, on the settings' day partitions. Dagster loads them
through `defs` (the defs folder), which reads the settings from the environment then."""

import dagster as dg

from assets.config import Settings, load_settings
from assets.data.features import feature_tables_asset
from assets.data.ingest import bad_row_fraction_check, ingest_events_asset
from assets.data.online_store import online_features_asset
from assets.data.serving_log import serving_log_asset
from assets.partitions import daily_partitions


def data_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings.start_date)
    return dg.Definitions(
        assets=[
            ingest_events_asset(partitions, settings.vocabulary),
            feature_tables_asset(partitions),
            online_features_asset(partitions, settings.feast_config),
            serving_log_asset(partitions),
        ],
        asset_checks=[bad_row_fraction_check(settings.max_bad_fraction)],
    )


@dg.definitions
def defs() -> dg.Definitions:
    return data_definitions(load_settings())
