"""A search request's query reaches the model: through /v1/retrieve and /v1/recommend, a model with
a search table (training.queries) answers a query with other items; an unknown query, or none, with
what it answers without one."""

import uuid

import pytest
import torch

from devstack.service import ServerThread, call
from serving.registry.publish import publish_model
from serving.service.app import create_app
from serving.service.checks import checked_registry
from serving.service.features import InMemoryFeatures
from serving.service.versions import VersionManager
from tests.helpers import tiny_model

USER = 7
FEATURES = {USER: {"seq_item_ids": [1001, 1002, 1003], "seq_outcomes": [1, 1, 2], "seq_surfaces": [1, 1, 1]}}


@pytest.fixture(scope="module")
def service(s3_server, tmp_path_factory):
    model = tiny_model(seed=1, n_queries=4, rank_outcomes=("click", "save"))
    with torch.no_grad():  # queries far apart, as a trained table's are (random rows are tiny)
        model.search_emb.weight[1:] = torch.randn(4, model.cfg.d_model) * 10
    registry = checked_registry(s3_server.settings().with_prefix(f"query-{uuid.uuid4().hex[:8]}"))
    version, _ = publish_model(registry, "search", model)
    registry.promote("search", version)
    manager = VersionManager(registry, ["search"], tmp_path_factory.mktemp("query") / "cache", poll_interval_s=3600)
    manager.refresh()
    app = create_app(manager, InMemoryFeatures(FEATURES), start_polling=False)
    with ServerThread(app) as server:
        yield server


def items(server, path, **extra):
    body = {"user_id": USER, "surface": "search", "k": 20, **extra}
    status, body, _ = call(server.host, server.port, "POST", path, body)
    assert status == 200, body
    return [c["item_id"] for c in body["candidates" if path == "/v1/retrieve" else "items"]]


@pytest.mark.parametrize("path", ["/v1/retrieve", "/v1/recommend"])
def test_a_search_query_changes_what_is_served(service, path):
    plain = items(service, path)
    answers = [items(service, path, query_id=q) for q in (1, 2, 3)]
    assert all(a != plain for a in answers) and answers[0] != answers[1] != answers[2]
    assert items(service, path, query_id=999) == plain  # a query the model never saw: no shift


def test_a_negative_query_id_is_refused_with_the_reason(service):
    status, body, _ = call(
        service.host, service.port, "POST", "/v1/retrieve", {"user_id": USER, "surface": "search", "query_id": -1}
    )
    assert status == 422 and "query_id" in str(body)
