"""Feast's Redis online store (feature_repo/feature_store.production.yaml): open a store on that
profile, fill a store from offline tables, read item features. A throwaway local `redis-server`
for tests and benchmarks is `devstack.redis.RedisServer`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from feature_pipeline.store import (
    FEATURE_REPO,
    FeastSettings,
    apply_repo,
    materialize_days,
    open_store,
    write_offline_tables,
)

if TYPE_CHECKING:
    from feast import FeatureStore

PRODUCTION_CONFIG = FEATURE_REPO / "feature_store.production.yaml"
CONNECTION_VARIABLE = "PINREC_REDIS_CONNECTION"
ITEM_FEATURE_SERVICE = "item_features_service"


def open_redis_store(data_dir: Path, connection: str) -> FeatureStore:
    """A FeatureStore on the production (Redis) profile, its registry and offline tables under
    `data_dir`, its online store at `connection` ("host:port[,password=...]")."""
    previous = os.environ.get(CONNECTION_VARIABLE)
    os.environ[CONNECTION_VARIABLE] = connection
    try:
        return open_store(FeastSettings(data_dir=data_dir, config_file=PRODUCTION_CONFIG))
    finally:
        if previous is None:
            del os.environ[CONNECTION_VARIABLE]
        else:
            os.environ[CONNECTION_VARIABLE] = previous


def fill_store(store: FeatureStore, data_dir: Path, tables_by_day: Mapping[date, dict[str, pd.DataFrame]]) -> None:
    """Write each day's offline tables under `data_dir`, apply feature_repo/ and materialize the
    whole span of the views given into the store's online store (what the online_features asset
    does for all three views)."""
    settings = FeastSettings(data_dir=data_dir)
    for day, tables in tables_by_day.items():
        write_offline_tables(settings, day, tables)
    apply_repo(store)
    days = sorted(tables_by_day)
    views = sorted({view for tables in tables_by_day.values() for view in tables})
    materialize_days(store, days[0], days[-1], views)


def online_item_features(store: FeatureStore, item_ids: list[int]) -> pd.DataFrame:
    """The item_features_service features of each item, as the online store serves them."""
    response = store.get_online_features(
        features=store.get_feature_service(ITEM_FEATURE_SERVICE),
        entity_rows=[{"item_id": int(i)} for i in item_ids],
    )
    return pd.DataFrame(response.to_dict())
