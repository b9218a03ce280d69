"""Publication is idempotent against a real SeaweedFS: a version id names its content (weights,
index, item ids and the model/serving config; not build timings, metrics or local paths), the
same content published again is the same version, and a publish whose manifest write landed but
whose answer was lost still succeeds."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from serving.registry.manifest import MANIFEST_FILE, VersionExistsError
from serving.registry.publish import publish_model
from serving.service.checks import checked_registry
from tests.helpers import tiny_model

T0 = datetime(2026, 1, 5, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def registry(s3_server):
    return checked_registry(s3_server.settings().with_prefix(f"idem-{uuid.uuid4().hex[:8]}"))


def test_the_same_weights_published_again_are_the_same_version(registry, tmp_path):
    """A re-run a day later, from another run directory, with other metrics: same weights, same
    index, same config -> the version that exists, and nothing new in the bucket."""
    first, _ = publish_model(
        registry,
        "homefeed",
        tiny_model(seed=0),
        created_at=T0,
        metrics={"partition": "2026-01-04"},
        config={"finetune_run": str(tmp_path / "run-a")},
    )
    keys_before = sorted(registry._all_version_dirs("homefeed"))
    again, _ = publish_model(
        registry,
        "homefeed",
        tiny_model(seed=0),
        created_at=T0 + timedelta(days=1),
        metrics={"partition": "2026-01-05"},
        config={"finetune_run": "/elsewhere/run-b"},
    )
    assert again == first
    assert registry.list_versions("homefeed") == [first]
    assert sorted(registry._all_version_dirs("homefeed")) == keys_before


def test_the_version_id_names_weights_index_and_config_not_timings_or_paths(registry):
    first, _ = publish_model(registry, "homefeed", tiny_model(seed=0), created_at=T0)
    other_weights, _ = publish_model(registry, "homefeed", tiny_model(seed=1), created_at=T0)
    other_serving, _ = publish_model(
        registry, "homefeed", tiny_model(seed=0), created_at=T0, outcome_weights={"click": 1.0}
    )
    assert len({first, other_weights, other_serving}) == 3
    manifest = registry.manifest("homefeed", first)
    assert manifest["index"]["build_seconds"] >= 0  # timings are kept in the manifest ...
    assert first.endswith("-" + manifest["id_sha256"][:8])  # ... but the id hashes the content only


def test_a_lost_answer_to_the_manifest_write_still_publishes(registry, tmp_path):
    """The manifest write lands, its answer is lost, and boto3's retry of the conditional write
    gets 412: the publish is a success (the version is there, with this content)."""

    class LostAnswer:
        def __init__(self, client):
            self._client, self.manifest_writes = client, 0

        def __getattr__(self, name):
            return getattr(self._client, name)

        def put_object(self, **kwargs):
            if kwargs["Key"].endswith("/" + MANIFEST_FILE):
                self.manifest_writes += 1
                self._client.put_object(**kwargs)  # lands; its answer never arrives ...
            return self._client.put_object(**kwargs)  # ... so the retry is what the caller sees

    lossy = LostAnswer(registry.client)
    version, _ = publish_model(
        checked_registry(registry.settings, client=lossy), "homefeed", tiny_model(seed=0), created_at=T0
    )
    assert lossy.manifest_writes == 1
    assert registry.list_versions("homefeed") == [version]
    assert registry.fetch("homefeed", version, tmp_path / "cache").version == version  # verifies


def test_another_content_under_the_same_id_is_never_overwritten(registry, tmp_path):
    """A manifest already at the id this publish computes, naming other content (a forged or
    colliding version): the publish refuses with VersionExistsError and touches nothing."""
    version, _ = publish_model(registry, "homefeed", tiny_model(seed=0), created_at=T0)
    key = registry.version_key("homefeed", version, MANIFEST_FILE)
    manifest = json.loads(registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
    manifest["files"]["model.pt"]["sha256"] = "0" * 64  # no longer this content
    forged = json.dumps(manifest).encode()
    registry.client.put_object(Bucket=registry.bucket, Key=key, Body=forged)
    objects = {
        k: registry.client.head_object(Bucket=registry.bucket, Key=k)["ETag"]
        for k in registry._all_version_dirs("homefeed")[version]
    }
    with pytest.raises(VersionExistsError, match="other content"):
        publish_model(registry, "homefeed", tiny_model(seed=0), created_at=T0)
    assert objects == {
        k: registry.client.head_object(Bucket=registry.bucket, Key=k)["ETag"]
        for k in registry._all_version_dirs("homefeed")[version]
    }


def test_versions_published_before_content_ids_still_verify(registry, tmp_path):
    """A schema-1 manifest (its id hashed the whole manifest, timings included) written by the
    previous release is still read and verified, and an edit of it is still caught."""
    from serving.registry.manifest import VERSION_FILES, content_sha256

    new, _ = publish_model(registry, "homefeed", tiny_model(seed=0), created_at=T0)
    local = registry.fetch("homefeed", new, tmp_path / "cache")
    old = {
        k: local.manifest[k]
        for k in ("surface", "created_at", "files", "index", "metrics", "data_partitions", "config", "parents")
    }
    old["schema"] = 1
    content = content_sha256(old)
    version = f"20251231T020000Z-{content[:8]}"
    manifest = {"version": version, **old, "content_sha256": content}
    for name in VERSION_FILES:
        registry.client.upload_file(
            str(local.path(name)), registry.bucket, registry.version_key("homefeed", version, name)
        )
    key = registry.version_key("homefeed", version, MANIFEST_FILE)
    registry.client.put_object(Bucket=registry.bucket, Key=key, Body=json.dumps(manifest).encode())
    assert registry.fetch("homefeed", version, tmp_path / "cache").manifest["schema"] == 1
    manifest["metrics"] = {"edited": 1}
    registry.client.put_object(Bucket=registry.bucket, Key=key, Body=json.dumps(manifest).encode())
    with pytest.raises(Exception, match="content hash"):
        registry.manifest("homefeed", version)


def test_publishing_again_restores_a_missing_object_of_the_same_content(registry):
    from serving.registry.manifest import MODEL_FILE

    version, _ = publish_model(registry, "homefeed", tiny_model(seed=0), created_at=T0)
    registry.client.delete_object(Bucket=registry.bucket, Key=registry.version_key("homefeed", version, MODEL_FILE))
    assert publish_model(registry, "homefeed", tiny_model(seed=0), created_at=T0)[0] == version
    registry.promote("homefeed", version)  # complete again
    assert registry.champion("homefeed") == version
