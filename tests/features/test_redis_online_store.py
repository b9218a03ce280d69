"""Feast's Redis online store (the production profile) against a real redis-server: the same
offline tables materialized into sqlite and into Redis serve the same online features."""

import pandas as pd
import pytest

from devstack.redis import RedisServer
from feature_pipeline.redis_store import (
    fill_store,
    online_item_features,
    open_redis_store,
)
from feature_pipeline.store import FeastSettings, online_user_sequences, open_store
from feature_pipeline.tables import day_feature_tables
from tests.helpers import ingest_world

pytestmark = pytest.mark.services  # starts processes of its own

MISSING_ID = 10**12


@pytest.fixture(scope="module")
def redis_server():
    # No skip when redis-server is missing: RedisServer.start raises RedisServerMissing, naming
    # the Debian package (scripts/setup.sh installs it).
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def both_stores(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("redis-vs-sqlite")
    table = ingest_world(root / "lake")
    tables = {day: day_feature_tables(table, day) for day in table.days()}
    sqlite = open_store(FeastSettings(data_dir=root / "sqlite"))
    fill_store(sqlite, root / "sqlite", tables)
    redis = open_redis_store(root / "redis", redis_server.connection_string)
    fill_store(redis, root / "redis", tables)
    return sqlite, redis, tables


def _comparable(frame: pd.DataFrame, key: str) -> list[dict]:
    """Rows as plain Python values (lists, numbers, None for missing), sorted by the entity key."""

    def plain(value):
        if value is None or isinstance(value, str):
            return value
        if hasattr(value, "__iter__"):
            return list(value)
        return None if pd.isna(value) else value

    return [{k: plain(v) for k, v in row.items()} for row in frame.sort_values(key).to_dict("records")]


def test_redis_profile_uses_the_redis_online_store(both_stores, redis_server):
    sqlite, redis, _ = both_stores
    assert sqlite.config.online_store.type == "sqlite"
    assert redis.config.online_store.type == "redis"
    assert redis.config.online_store.connection_string == redis_server.connection_string


def _read_both(both_stores, view: str, key: str, read):
    """Every id of `view`'s offline tables plus a missing one, read from sqlite and from Redis."""
    sqlite, redis, tables = both_stores
    ids = sorted({int(i) for day in tables.values() for i in day[view][key]})
    return ids, read(sqlite, ids + [MISSING_ID]), read(redis, ids + [MISSING_ID])


def test_user_sequences_read_the_same_from_redis_and_sqlite(both_stores):
    tables = both_stores[2]
    users, from_sqlite, from_redis = _read_both(both_stores, "user_sequence", "user_id", online_user_sequences)
    assert len(users) > 20
    assert _comparable(from_redis, "user_id") == _comparable(from_sqlite, "user_id")
    # every known user has a sequence, and it is the newest day's one
    newest = pd.concat([t["user_sequence"] for _, t in sorted(tables.items())]).drop_duplicates("user_id", keep="last")
    got = from_redis.set_index("user_id")
    for row in newest.itertuples():
        assert list(got.loc[row.user_id, "seq_item_ids"]) == list(row.seq_item_ids)
        assert int(got.loc[row.user_id, "seq_length"]) == row.seq_length


def test_missing_user_reads_as_missing_in_redis_too(both_stores):
    _, redis, _ = both_stores
    row = online_user_sequences(redis, [MISSING_ID]).iloc[0]
    assert row["seq_item_ids"] is None and row["seq_length"] is None


def test_item_features_read_the_same_from_redis_and_sqlite(both_stores):
    items, from_sqlite, from_redis = _read_both(both_stores, "item_stats", "item_id", online_item_features)
    assert len(items) > 100
    assert set(from_redis.columns) >= {"impressions", "clicks", "homefeed_engagement_rate"}
    assert _comparable(from_redis, "item_id") == _comparable(from_sqlite, "item_id")
    assert pd.isna(from_redis.set_index("item_id").loc[MISSING_ID, "impressions"])


def test_missing_redis_server_fails_naming_the_package(tmp_path):
    from devstack.redis import RedisServerMissing

    with pytest.raises(RedisServerMissing, match="apt-get install redis-server"):
        RedisServer(binary=str(tmp_path / "redis-server")).start()
