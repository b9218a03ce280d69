"""The service's exploration share: uniformly random slots, each answer slot with its propensity."""

import json

import numpy as np

from serving.registry.index import build_tuned_index
from serving.service import encoder as enc
from serving.service.checks import checked_registry
from serving.service.exploration import ExplorationConfig
from serving.service.retriever import LoadedVersion
from serving.service.service import Pending, RetrievalService, ServingConfig
from serving.service.versions import VersionManager
from storage.s3 import S3Settings
from tests.helpers import tiny_model


def _service(config: ServingConfig) -> tuple[RetrievalService, LoadedVersion]:
    model = tiny_model()
    vectors, ids = enc.item_table(model)
    index, _ = build_tuned_index(vectors)
    loaded = LoadedVersion(
        "homefeed",
        "v1",
        {"files": {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}},
        model,
        index,
        ids,
    )
    idle = VersionManager(checked_registry(S3Settings(endpoint_url="http://127.0.0.1:9")), ["homefeed"], "unused")
    return RetrievalService(idle, None, config), loaded


def _answer(service: RetrievalService, loaded: LoadedVersion, endpoint: str = "retrieve") -> list[dict]:
    pending = Pending(7, "homefeed", 40, None, None, loaded, "champion", endpoint=endpoint)
    body = json.loads(service.serve_now(pending).body)
    return body["candidates" if endpoint == "retrieve" else "items"]


def test_an_exploration_share_fills_random_slots_and_logs_their_propensity():
    service, loaded = _service(ServingConfig(exploration=ExplorationConfig({"homefeed": 0.3}), exploration_seed=1))
    plain_service, _ = _service(ServingConfig())
    plain = _answer(plain_service, loaded)
    assert all("propensity" not in c for c in plain)  # off by default: the answer is unchanged
    explored = [c for _ in range(5) for c in _answer(service, loaded)]
    random_slots = [c for c in explored if c["outcome"] == "explore"]
    assert 0.15 < len(random_slots) / len(explored) < 0.45
    n_items = len(loaded.item_ids)
    assert all(np.isclose(c["propensity"], 0.3 / n_items) and c["score"] is None for c in random_slots)
    assert all(c["propensity"] == 1.0 for c in explored if c["outcome"] != "explore")
    ranked = [c["item_id"] for c in _answer(service, loaded) if c["outcome"] != "explore"]
    order = [c["item_id"] for c in plain]
    assert ranked == [i for i in order if i in set(ranked)]  # the ranked slots keep their order
    assert all(c["propensity"] for c in _answer(service, loaded, "recommend"))
