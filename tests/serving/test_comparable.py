"""A champion of another deployment, vocabulary or item space is never compared with a candidate
(serving.registry.comparable): the candidate is judged as its deployment's first would be."""

import uuid

import pytest

from serving.registry.comparable import comparable_champion, why_not_comparable
from serving.registry.publish import publish_model
from serving.service.checks import checked_registry
from tests.helpers import tiny_model


@pytest.fixture
def registry(s3_server):
    return checked_registry(s3_server.settings().with_prefix(f"comparable-{uuid.uuid4().hex[:8]}"))


def _champion(registry, model, deployment: str) -> str:
    version, _ = publish_model(registry, "homefeed", model, config={"deployment": deployment})
    registry.promote("homefeed", version)
    return version


def test_a_champion_of_the_same_deployment_and_items_is_compared(registry):
    champion = _champion(registry, tiny_model(seed=0), "shop")
    candidate, _ = publish_model(registry, "homefeed", tiny_model(seed=1), config={"deployment": "shop"})
    assert why_not_comparable(registry, "homefeed", candidate, champion) is None
    assert comparable_champion(registry, "homefeed", candidate) == champion


def test_a_champion_of_another_deployment_is_never_compared(registry):
    _champion(registry, tiny_model(seed=0), "simulated")
    candidate, _ = publish_model(registry, "homefeed", tiny_model(seed=1), config={"deployment": "live"})
    said = []
    assert comparable_champion(registry, "homefeed", candidate, said.append) is None
    assert said and "belongs to deployment simulated, the candidate to live" in said[0]


def test_a_champion_of_another_item_space_is_never_compared(registry):
    champion = _champion(registry, tiny_model(seed=0, item_id_offset=1000), "shop")
    candidate, _ = publish_model(
        registry, "homefeed", tiny_model(seed=0, item_id_offset=50_000), config={"deployment": "shop"}
    )
    reason = why_not_comparable(registry, "homefeed", candidate, champion)
    assert reason and "another item space (0% of the smaller catalogue shared" in reason
    assert comparable_champion(registry, "homefeed", candidate) is None
