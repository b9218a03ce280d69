"""The service reads user sequences from a real Feast online store (sqlite)."""

import uuid

import pandas as pd
import pytest

from devstack.service import ServerThread, call
from events.contract import OUTCOME_CODE, SURFACE_CODE
from feature_pipeline.store import FeastSettings, apply_repo, open_store
from serving.registry.publish import publish_model
from serving.service.app import create_app
from serving.service.checks import checked_registry
from serving.service.encoder import UserSequence
from serving.service.features import FeastFeatures
from serving.service.versions import VersionManager
from tests.helpers import tiny_model

ITEMS = [1005, 1001, 1007]


@pytest.fixture(scope="module")
def feast_features(tmp_path_factory):
    store = open_store(FeastSettings(tmp_path_factory.mktemp("feast")))
    apply_repo(store)
    row = {
        "user_id": 42,
        "seq_item_ids": ITEMS,
        "seq_outcomes": [OUTCOME_CODE["click"]] * 3,
        "seq_surfaces": [SURFACE_CODE["homefeed"]] * 3,
        "seq_timestamps_us": [1_767_000_000_000_000 + i for i in range(3)],
        "seq_length": 3,
        "seq_shown_item_ids": [],  # nothing shown lately: the freshness filter has nothing to add
        "event_timestamp": pd.Timestamp.now(tz="UTC").floor("s"),
    }
    store.write_to_online_store("user_sequence", pd.DataFrame([row]))
    return FeastFeatures(store)


def test_feast_reader_returns_the_online_lists_and_none_for_unknown_users(feast_features):
    seq = UserSequence.from_features(feast_features.read(42))
    assert seq.item_ids.tolist() == ITEMS and seq.outcomes.tolist() == [OUTCOME_CODE["click"]] * 3
    assert feast_features.read(43) is None


def test_feast_reader_reads_a_batch_of_users_in_one_call(feast_features):
    rows = feast_features.read_many([42, 43, 42])
    assert rows[1] is None and rows[0] == rows[2] and list(rows[0]["seq_item_ids"]) == ITEMS


def test_service_filters_the_items_of_the_feast_sequence(s3_server, feast_features, tmp_path):
    registry = checked_registry(s3_server.settings().with_prefix(f"feast-{uuid.uuid4().hex[:8]}"))
    version, _ = publish_model(registry, "homefeed", tiny_model(n_items=50))
    registry.promote("homefeed", version)
    manager = VersionManager(registry, ["homefeed"], tmp_path / "cache")
    manager.refresh()
    with ServerThread(create_app(manager, feast_features, start_polling=False)) as server:
        status, body, _ = call(
            server.host, server.port, "POST", "/v1/retrieve", {"user_id": 42, "surface": "homefeed", "k": 50}
        )
    assert status == 200
    returned = {c["item_id"] for c in body["candidates"]}
    assert len(returned) == 50 - len(ITEMS) and not returned & set(ITEMS)
