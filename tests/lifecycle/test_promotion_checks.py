"""A version is loaded and queried before a pointer names it, and a service whose champion
cannot load falls back to the newest loadable earlier champion; readiness is per surface.
Against a real SeaweedFS, real faiss indexes and real uvicorn servers."""

import logging
import uuid

import numpy as np
import pytest
import torch

from devstack.service import ServerThread, call
from serving.registry.index import build_tuned_index, write_index
from serving.registry.manifest import INDEX_FILE, ITEM_IDS_FILE, MODEL_FILE, RegistryError
from serving.registry.publish import publish_model
from serving.registry.store import Registry
from serving.service.app import create_app
from serving.service.checks import checked_registry
from serving.service.versions import VersionManager
from storage.s3 import get_bytes, put_bytes
from tests.helpers import tiny_model

SURFACE = "homefeed"


def _registry(s3_server, name: str) -> Registry:
    return checked_registry(s3_server.settings().with_prefix(f"check-{name}-{uuid.uuid4().hex[:8]}"))


def _corrupt(registry: Registry, version: str, name: str = INDEX_FILE) -> None:
    """Flip one bit of a published object (same size: only a checksum finds it)."""
    key = registry.version_key(SURFACE, version, name)
    blob = get_bytes(registry.client, registry.bucket, key)
    put_bytes(registry.client, registry.bucket, key, blob[:-1] + bytes([blob[-1] ^ 1]))


def _republish_with(registry: Registry, good: str, tmp_path, **replace) -> str:
    """A complete, checksum-valid version made of `good`'s files with some replaced: the
    manifest matches every byte, only loading or querying it can tell it is broken."""
    local = registry.fetch(SURFACE, good, tmp_path / "good")
    files = {name: replace.get(name, local.path(name)) for name in (MODEL_FILE, INDEX_FILE, ITEM_IDS_FILE)}
    return registry.publish(SURFACE, files, index=local.manifest["index"], config=local.manifest["config"])


def _index_file(tmp_path, vectors: np.ndarray) -> str:
    index, _ = build_tuned_index(vectors.astype(np.float32), "flat")
    path = tmp_path / f"index-{uuid.uuid4().hex[:6]}.faiss"
    write_index(index, str(path))
    return path


@pytest.fixture(scope="module")
def published(s3_server, tmp_path_factory):
    registry = _registry(s3_server, "broken")
    good, _ = publish_model(registry, SURFACE, tiny_model(seed=0, d_model=32))
    registry.promote(SURFACE, good)
    return registry, good, tmp_path_factory.mktemp("checks")


def _broken_index_dimension(tmp, _model):
    return {INDEX_FILE: _index_file(tmp, np.random.default_rng(0).normal(size=(300, 16)))}


def _broken_weights_of_another_shape(tmp, _model):
    path = tmp / "other-model.pt"
    torch.save(tiny_model(seed=0, d_model=16).state_dict(), path)
    return {MODEL_FILE: path}


def _broken_index_of_nans(tmp, _model):
    return {INDEX_FILE: _index_file(tmp, np.full((300, 32), np.nan))}


BROKEN = {
    "index-dimension-differs-from-the-model": (_broken_index_dimension, "dim"),
    "weights-for-another-model-config": (_broken_weights_of_another_shape, "size mismatch"),
    "known-query-returns-nothing": (_broken_index_of_nans, "returned no candidates"),
}


@pytest.mark.parametrize("kind", BROKEN, ids=list(BROKEN))
def test_promotion_refuses_a_version_that_does_not_load_or_answer(published, kind, tmp_path):
    registry, good, _ = published
    make, reason = BROKEN[kind]
    broken = _republish_with(registry, good, tmp_path, **make(tmp_path, None))
    with pytest.raises(RegistryError, match=reason):
        registry.promote(SURFACE, broken)
    assert registry.champion(SURFACE) == good  # the pointer never moved
    with pytest.raises(RegistryError, match=reason):
        registry.set_canary(SURFACE, broken, 0.1)
    assert registry.canary(SURFACE) is None


def test_rollback_refuses_a_previous_champion_that_no_longer_loads(s3_server, tmp_path):
    registry = _registry(s3_server, "rollback")
    v0, _ = publish_model(registry, SURFACE, tiny_model(seed=0))
    v1, _ = publish_model(registry, SURFACE, tiny_model(seed=1))
    registry.promote(SURFACE, v0)
    registry.promote(SURFACE, v1)
    _corrupt(registry, v0)
    with pytest.raises(RegistryError, match="sha256"):
        registry.rollback(SURFACE)
    assert registry.champion(SURFACE) == v1


def test_a_restarted_service_falls_back_to_the_newest_loadable_earlier_champion(s3_server, tmp_path, caplog):
    """champion.json names v3 (damaged after promotion), its history v2 (damaged too), v1, v0:
    a freshly started service serves v1, is ready, and says so in a metric and a log line."""
    registry = _registry(s3_server, "fallback")
    versions = [publish_model(registry, SURFACE, tiny_model(seed=s))[0] for s in range(4)]
    for v in versions:
        registry.promote(SURFACE, v)
    _corrupt(registry, versions[3])
    _corrupt(registry, versions[2], MODEL_FILE)
    manager = VersionManager(registry, [SURFACE], tmp_path / "cache", poll_interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="serving.service.versions"):
        manager.refresh()
    assert manager.loaded()[SURFACE]["champion"] == versions[1]
    assert f"falling back to the earlier champion {versions[1]}" in caplog.text
    with ServerThread(create_app(manager, None, start_polling=False)) as server:
        status, body, _ = call(
            server.host, server.port, "POST", "/v1/retrieve", {"user_id": 3, "surface": SURFACE, "k": 5}
        )
        ready = call(server.host, server.port, "GET", "/readyz")
        metrics = call(server.host, server.port, "GET", "/metrics")[1]
    assert status == 200 and body["version"] == versions[1]
    assert ready[0] == 200
    assert (
        f'pinrec_version_fallbacks_total{{pointer_version="{versions[3]}",serving_version="{versions[1]}",'
        f'surface="{SURFACE}"}} 1.0'
    ) in metrics
    assert (
        f'pinrec_serving_fallback{{pointer_version="{versions[3]}",serving_version="{versions[1]}",'
        f'surface="{SURFACE}"}} 1.0'
    ) in metrics

    good, _ = publish_model(registry, SURFACE, tiny_model(seed=9))  # a loadable champion again
    registry.promote(SURFACE, good)
    manager.refresh()
    assert manager.loaded()[SURFACE]["champion"] == good
    assert manager.fallbacks == {}


def test_a_running_service_keeps_the_newest_loadable_champion_it_has(s3_server, tmp_path):
    registry = _registry(s3_server, "running")
    v0, _ = publish_model(registry, SURFACE, tiny_model(seed=0))
    v1, _ = publish_model(registry, SURFACE, tiny_model(seed=1))
    registry.promote(SURFACE, v0)
    manager = VersionManager(registry, [SURFACE], tmp_path / "cache", poll_interval_s=3600)
    manager.refresh()
    registry.promote(SURFACE, v1)
    _corrupt(registry, v1)
    manager.refresh()
    assert manager.loaded()[SURFACE]["champion"] == v0
    assert manager.fallbacks[SURFACE] == {"pointer_version": v1, "serving_version": v0}


def test_readiness_is_per_surface_and_one_surface_without_a_champion_keeps_the_rest_ready(s3_server, tmp_path):
    registry = _registry(s3_server, "ready")
    version, _ = publish_model(registry, SURFACE, tiny_model(seed=0))
    registry.promote(SURFACE, version)  # "search" never gets a champion
    manager = VersionManager(registry, [SURFACE, "search"], tmp_path / "cache", poll_interval_s=3600)
    with ServerThread(create_app(manager, None, start_polling=False)) as server:

        def get(path):
            return call(server.host, server.port, "GET", path)

        assert get("/readyz")[0] == 503  # nothing loaded yet
        manager.refresh()
        status, body, _ = get("/readyz")
        assert status == 200 and body["surfaces"] == {SURFACE: True, "search": False}
        assert get(f"/readyz/{SURFACE}")[0] == 200
        status, body, _ = get("/readyz/search")
        assert status == 503 and "search" in body["error"]
        assert get("/readyz/related")[0] == 404  # not served here
        metrics = get("/metrics")[1]
    assert f'pinrec_surface_ready{{surface="{SURFACE}"}} 1.0' in metrics
    assert 'pinrec_surface_ready{surface="search"} 0.0' in metrics
