"""serving.registry.store against a real SeaweedFS: immutable versions, verification, pointers,
retention, the operator CLI."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from serving.registry.manifest import (
    INDEX_FILE,
    ITEM_IDS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    IntegrityError,
    RegistryError,
    StaleVersionError,
    VersionExistsError,
    VersionNotFoundError,
)
from serving.registry.store import Registry
from serving.service import cli
from storage.s3 import put_bytes

T0 = datetime(2026, 1, 5, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def registry(s3_server):
    """Versions of placeholder bytes: pointers move without the load-and-query check
    (tests/lifecycle/test_promotion_checks.py tests that check)."""
    return Registry(s3_server.settings().with_prefix(f"reg-{uuid.uuid4().hex[:8]}"))


def write_files(tmp_path, tag="a"):
    files = {}
    for name in (MODEL_FILE, INDEX_FILE, ITEM_IDS_FILE):
        p = tmp_path / f"{tag}-{name}"
        p.write_bytes(f"{tag}:{name}:".encode() * 100)
        files[name] = p
    return files


def publish(registry, tmp_path, tag="a", minutes=0, **kw):
    return registry.publish(
        "homefeed",
        write_files(tmp_path, tag),
        index={"kind": "flat", "params": {}},
        created_at=T0 + timedelta(minutes=minutes),
        **kw,
    )


def test_publish_then_fetch_verifies_and_returns_the_files(registry, tmp_path):
    files = write_files(tmp_path)
    version = registry.publish(
        "homefeed",
        files,
        index={"kind": "flat", "params": {}, "recall_at_100": 1.0},
        metrics={"hr@10": 0.2},
        data_partitions=["2026-01-04"],
        config={"model": {"d_model": 8}},
        created_at=T0,
    )
    assert version.startswith("20260105T020000Z-") and registry.list_versions("homefeed") == [version]
    local = registry.fetch("homefeed", version, tmp_path / "cache")
    for name, src in files.items():
        assert local.path(name).read_bytes() == src.read_bytes()
    m = local.manifest
    assert m["files"][MODEL_FILE]["size"] == files[MODEL_FILE].stat().st_size
    assert len(m["files"][INDEX_FILE]["sha256"]) == 64
    assert m["metrics"] == {"hr@10": 0.2} and m["data_partitions"] == ["2026-01-04"]
    assert m["index"]["recall_at_100"] == 1.0 and m["config"]["model"] == {"d_model": 8}
    assert version.endswith(m["id_sha256"][:8])


def test_parents_are_recorded_in_the_manifest(registry, tmp_path):
    first = publish(registry, tmp_path, "a")
    second = publish(registry, tmp_path, "b", minutes=1, parents=[first])
    assert registry.manifest("homefeed", second)["parents"] == [first]
    assert registry.list_versions("homefeed") == [first, second]


def test_version_without_manifest_is_invisible(registry, tmp_path):
    version = publish(registry, tmp_path)
    half = "20260105T030000Z-deadbeef"
    for name in (MODEL_FILE, INDEX_FILE):
        put_bytes(registry.client, registry.bucket, registry.version_key("homefeed", half, name), b"x")
    assert registry.list_versions("homefeed") == [version]
    with pytest.raises(VersionNotFoundError):
        registry.fetch("homefeed", half, tmp_path / "cache")
    with pytest.raises(VersionNotFoundError):
        registry.promote("homefeed", half)


def test_corrupted_object_is_detected_and_nothing_is_kept(registry, tmp_path):
    version = publish(registry, tmp_path)
    key = registry.version_key("homefeed", version, INDEX_FILE)
    original = registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read()
    put_bytes(registry.client, registry.bucket, key, b"Y" + original[1:])  # same size, one byte off
    with pytest.raises(IntegrityError, match="index.faiss sha256"):
        registry.fetch("homefeed", version, tmp_path / "cache")
    assert not (tmp_path / "cache" / "homefeed" / version).exists()


def test_truncated_object_is_detected(registry, tmp_path):
    version = publish(registry, tmp_path)
    put_bytes(registry.client, registry.bucket, registry.version_key("homefeed", version, MODEL_FILE), b"short")
    with pytest.raises(IntegrityError, match="bytes"):
        registry.fetch("homefeed", version, tmp_path / "cache")


def test_a_damaged_object_is_put_back_from_a_verified_local_copy(registry, tmp_path):
    version = publish(registry, tmp_path)
    local = registry.fetch("homefeed", version, tmp_path / "cache")  # verified when fetched
    key = registry.version_key("homefeed", version, INDEX_FILE)
    original = registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read()
    put_bytes(registry.client, registry.bucket, key, b"Y" + original[1:])  # damaged in S3
    registry.client.delete_object(Bucket=registry.bucket, Key=registry.version_key("homefeed", version, MODEL_FILE))

    assert sorted(registry.repair("homefeed", version, local.directory)) == [INDEX_FILE, MODEL_FILE]
    assert registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read() == original
    registry.fetch("homefeed", version, tmp_path / "fresh")  # every checksum holds again
    assert registry.repair("homefeed", version, local.directory) == []  # nothing left to put back

    local.path(ITEM_IDS_FILE).write_bytes(b"tampered")  # a copy that is not the manifest's is refused
    put_bytes(registry.client, registry.bucket, key, b"Z" + original[1:])
    with pytest.raises(IntegrityError, match="item_ids.npy"):
        registry.repair("homefeed", version, local.directory)
    assert registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read() == b"Z" + original[1:]


def test_tampered_local_copy_is_downloaded_again(registry, tmp_path):
    version = publish(registry, tmp_path)
    local = registry.fetch("homefeed", version, tmp_path / "cache")
    local.path(ITEM_IDS_FILE).write_bytes(b"tampered")
    again = registry.fetch("homefeed", version, tmp_path / "cache")
    assert again.path(ITEM_IDS_FILE).read_bytes() == write_files(tmp_path)[ITEM_IDS_FILE].read_bytes()


def test_a_published_version_is_never_overwritten(registry, tmp_path):
    version = publish(registry, tmp_path, metrics={"hr@10": 0.1})
    key = registry.version_key("homefeed", version, MANIFEST_FILE)
    before = registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read()
    # same content, same second, other metrics: the same version, left as it was
    assert publish(registry, tmp_path, metrics={"hr@10": 0.9}) == version
    assert registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read() == before
    manifest = json.loads(before)
    manifest["files"][MODEL_FILE]["sha256"] = "0" * 64  # the id now names other content
    put_bytes(registry.client, registry.bucket, key, json.dumps(manifest).encode())
    with pytest.raises(VersionExistsError):
        publish(registry, tmp_path)


def test_manifest_edited_after_publication_fails_its_content_hash(registry, tmp_path):
    version = publish(registry, tmp_path)
    key = registry.version_key("homefeed", version, MANIFEST_FILE)
    manifest = json.loads(registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
    manifest["metrics"] = {"recall": 1.0}
    put_bytes(registry.client, registry.bucket, key, json.dumps(manifest).encode())
    with pytest.raises(IntegrityError, match="content hash"):
        registry.manifest("homefeed", version)


@pytest.mark.parametrize(
    "surface,version",
    [
        ("../other", "20260105T020000Z-deadbeef"),
        ("homefeed", "../../serving/homefeed"),
        ("homefeed", "20260105T020000Z-deadbeef/.."),
        ("Home Feed", "20260105T020000Z-deadbeef"),
    ],
)
def test_surface_and_version_names_are_validated_before_use(registry, surface, version):
    with pytest.raises(ValueError, match="invalid"):
        registry.version_key(surface, version, MANIFEST_FILE)


def test_promote_refuses_a_version_with_a_missing_file(registry, tmp_path):
    version = publish(registry, tmp_path)
    registry.client.delete_object(Bucket=registry.bucket, Key=registry.version_key("homefeed", version, MODEL_FILE))
    with pytest.raises(IntegrityError, match="model.pt is missing"):
        registry.promote("homefeed", version)
    assert registry.champion("homefeed") is None


def test_promote_and_roll_back_move_the_champion_pointer(registry, tmp_path):
    v1 = publish(registry, tmp_path, "a")
    v2 = publish(registry, tmp_path, "b", minutes=1)
    v3 = publish(registry, tmp_path, "c", minutes=2)
    assert registry.champion("homefeed") is None
    registry.promote("homefeed", v1)
    registry.promote("homefeed", v2)
    registry.promote("homefeed", v3)
    assert registry.champion("homefeed") == v3
    assert registry.read_pointer("homefeed", "champion")["previous"] == [v2, v1]
    registry.rollback("homefeed")
    assert registry.champion("homefeed") == v2
    registry.rollback("homefeed")
    assert registry.champion("homefeed") == v1
    with pytest.raises(RegistryError, match="no previous"):
        registry.rollback("homefeed")
    registry.rollback("homefeed", to=v3)
    assert registry.champion("homefeed") == v3


def test_promote_never_replaces_a_champion_trained_on_newer_data(registry, tmp_path):
    """The staleness rule, enforced where the pointer moves: an older model is refused (unless
    the operator says so), the same day is not older, and rollback may always go back."""
    newer = publish(registry, tmp_path, "a", data_partitions=["2026-01-02", "2026-01-03"])
    older = publish(registry, tmp_path, "b", minutes=1, data_partitions=["2026-01-01", "2026-01-02"])
    same_day = publish(registry, tmp_path, "c", minutes=2, data_partitions=["2026-01-03"])
    registry.promote("homefeed", newer)
    with pytest.raises(StaleVersionError, match="trained on data through 2026-01-02, the champion through 2026-01-03"):
        registry.promote("homefeed", older)
    assert registry.champion("homefeed") == newer
    registry.promote("homefeed", same_day)
    registry.promote("homefeed", older, allow_older=True)
    assert registry.champion("homefeed") == older
    registry.rollback("homefeed")
    assert registry.champion("homefeed") == same_day
    assert registry.data_through("homefeed", same_day) == "2026-01-03"


def test_canary_pointer_names_a_version_and_a_traffic_fraction(registry, tmp_path):
    v1 = publish(registry, tmp_path, "a")
    v2 = publish(registry, tmp_path, "b", minutes=1)
    registry.promote("homefeed", v1)
    registry.set_canary("homefeed", v2, 0.05)
    assert registry.canary("homefeed") == (v2, 0.05)
    with pytest.raises(ValueError, match="traffic"):
        registry.set_canary("homefeed", v2, 1.5)
    registry.promote("homefeed", v2)  # promoting the canary ends the canary
    assert registry.canary("homefeed") is None and registry.champion("homefeed") == v2


def test_retention_keeps_the_newest_and_every_version_a_pointer_names(registry, tmp_path):
    versions = [publish(registry, tmp_path, tag, minutes=i) for i, tag in enumerate("abcdef")]
    registry.promote("homefeed", versions[1])
    registry.promote("homefeed", versions[2])  # versions[1] is in the rollback history
    registry.set_canary("homefeed", versions[0], 0.1)
    deleted = registry.retain("homefeed", keep=2)
    assert deleted == [versions[3]]
    assert registry.list_versions("homefeed") == [versions[0], versions[1], versions[2], versions[4], versions[5]]
    left = registry._all_version_dirs("homefeed")
    assert versions[3] not in left  # every object of a deleted version is gone


def test_retention_removes_stale_half_written_versions_only(registry, tmp_path):
    publish(registry, tmp_path)
    half = "20260105T030000Z-deadbeef"
    put_bytes(registry.client, registry.bucket, registry.version_key("homefeed", half, MODEL_FILE), b"x")
    assert registry.retain("homefeed", keep=5) == []  # might still be uploading
    assert registry.retain("homefeed", keep=5, stale_after_s=-1) == [half]
    assert half not in registry._all_version_dirs("homefeed")


def test_retention_judges_age_by_the_servers_clock_not_the_local_one(registry, tmp_path, monkeypatch):
    """A half-written version uploaded a moment ago is fresh by the server's clock: a local clock
    two days ahead (or behind) changes nothing, neither deleting it early nor keeping it forever."""
    import serving.registry.store as reg

    publish(registry, tmp_path)
    half = "20260105T030000Z-deadbeef"
    put_bytes(registry.client, registry.bucket, registry.version_key("homefeed", half, MODEL_FILE), b"x")
    real_now = reg._now
    monkeypatch.setattr(reg, "_now", lambda: real_now() + timedelta(days=2))
    assert registry.retain("homefeed", keep=5, stale_after_s=3600) == []  # fresh on the server
    monkeypatch.setattr(reg, "_now", lambda: real_now() - timedelta(days=2))
    assert registry.retain("homefeed", keep=5, stale_after_s=-1) == [half]  # stale on the server


def test_leftover_download_folders_are_removed(registry, tmp_path):
    """A download killed half way leaves a hidden temporary folder in the cache: the next fetch
    removes those older than an hour (newer ones may be another process's download)."""
    import os
    import time

    version = publish(registry, tmp_path)
    cache = tmp_path / "cache"
    old = cache / "homefeed" / f".{version}.crashed"
    new = cache / "homefeed" / f".{version}.in-flight"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / MODEL_FILE).write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    registry.fetch("homefeed", version, cache)
    assert not old.exists() and new.exists()


def test_operator_cli_lists_shows_promotes_and_rolls_back(registry, tmp_path, monkeypatch, capsys, s3_server):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PINREC_S3_PREFIX", registry.settings.prefix)
    from serving.registry.publish import (
        publish_model,  # the CLI checks that a version loads: real models
    )
    from tests.helpers import tiny_model

    v1, _ = publish_model(registry, "homefeed", tiny_model(seed=0), created_at=T0)
    v2, _ = publish_model(registry, "homefeed", tiny_model(seed=1), created_at=T0 + timedelta(minutes=1))
    assert cli.main(["promote", "homefeed", v1]) == 0
    assert cli.main(["promote", "homefeed", v2]) == 0
    capsys.readouterr()
    assert cli.main(["versions", "homefeed"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [v1, v2] and "champion" in lines[1]
    assert cli.main(["show", "homefeed", v1]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == v1
    assert cli.main(["rollback", "homefeed"]) == 0
    assert registry.champion("homefeed") == v1
    assert cli.main(["canary", "homefeed", v2, "--traffic", "0.2"]) == 0
    assert registry.canary("homefeed") == (v2, 0.2)
    assert cli.main(["promote", "homefeed", "20990101T000000Z-00000000"]) == 1
    assert "no version" in capsys.readouterr().err
