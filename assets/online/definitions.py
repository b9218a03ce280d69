"""The online area's definitions for a deployment's settings (the online metrics on its day
partitions). Dagster loads them through `defs` (the defs folder), which reads the settings from
the environment then."""

import dagster as dg

from assets.config import Settings, load_settings
from assets.online.online_metrics import online_metrics_asset
from assets.partitions import daily_partitions


def online_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=[online_metrics_asset(daily_partitions(settings.start_date))])


@dg.definitions
def defs() -> dg.Definitions:
    return online_definitions(load_settings())
