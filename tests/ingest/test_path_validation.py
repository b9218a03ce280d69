"""No path traversal through a partition key, a surface or a version name: every entry point
(Dagster partitions, the registry, the operator CLI, the HTTP API, the settings) refuses hostile
names before they reach a file path or an S3 key."""

import os
import uuid

import dagster as dg
import pytest

from devstack.service import ServerThread, call
from serving.registry.manifest import validate_surface, validate_version
from serving.service.app import create_app
from serving.service.checks import checked_registry
from serving.service.versions import VersionManager
from storage.s3 import list_keys

GOOD_VERSION = "20260105T020000Z-deadbeef"
HOSTILE = [
    "../homefeed",
    "homefeed/../../serving",
    "/etc/passwd",
    "..",
    "%2e%2e",
    "%2e%2e%2fhomefeed",
    "..%2fhomefeed",
    "homefeed\x00",
    "homefeed\n",
    "home\\feed",
    "",
]
HOSTILE_VERSIONS = [
    f"../{GOOD_VERSION}",
    f"{GOOD_VERSION}/../x",
    f"/{GOOD_VERSION}",
    f"{GOOD_VERSION}\n",
    f"{GOOD_VERSION}\x00",
    "%2e%2e",
    "..",
    "",
]
HOSTILE_DAYS = [
    "../2026-01-03",
    "2026-01-03/../../x",
    "/etc/passwd",
    "%2e%2e",
    "2026-01-03\x00",
    "2026-01-03\n",
    "2026-01-03T00:00:00",
]


def _ids(values):
    return [repr(v) for v in values]


@pytest.mark.parametrize("name", HOSTILE, ids=_ids(HOSTILE))
def test_hostile_surface_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid surface name"):
        validate_surface(name)


@pytest.mark.parametrize("version", HOSTILE_VERSIONS, ids=_ids(HOSTILE_VERSIONS))
def test_hostile_version_ids_are_refused(version):
    with pytest.raises(ValueError, match="invalid version id"):
        validate_version(version)


@pytest.fixture
def registry(s3_server):
    return checked_registry(s3_server.settings().with_prefix(f"paths-{uuid.uuid4().hex[:8]}"))


def test_registry_refuses_hostile_names_before_touching_s3(registry):
    calls = [
        lambda n: registry.promote(n, GOOD_VERSION),
        lambda n: registry.promote("homefeed", n),
        lambda n: registry.set_canary("homefeed", n, 0.1),
        lambda n: registry.list_versions(n),
        lambda n: registry.manifest("homefeed", n),
        lambda n: registry.version_key(n, GOOD_VERSION, "model.pt"),
        lambda n: registry.pointer_key(n, "champion"),
    ]
    for name in ["../homefeed", "/etc/passwd", "homefeed\x00", f"../{GOOD_VERSION}"]:
        for fn in calls:
            with pytest.raises(ValueError, match="invalid (surface name|version id)"):
                fn(name)
    assert list_keys(registry.client, registry.bucket, registry.settings.prefix + "/") == []


# A hostile surface is not one of the surfaces the CLI offers (a usage error, exit 2); a hostile
# version id passes argparse and is refused by the registry's validation (exit 1).
@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["promote", "../homefeed", GOOD_VERSION], 2, "invalid choice: '../homefeed'"),
        (["promote", "homefeed", f"../../serving/{GOOD_VERSION}"], 1, "invalid version id"),
        (["show", "homefeed", f"{GOOD_VERSION}\x00"], 1, "invalid version id"),
        (["versions", "/etc/passwd"], 2, "invalid choice: '/etc/passwd'"),
        (["canary", "homefeed", "%2e%2e", "--traffic", "0.1"], 1, "invalid version id"),
        (["retain", "homefeed/../x", "--keep", "1"], 2, "invalid choice: 'homefeed/../x'"),
        (["serve", "--surface", "../homefeed", "--features", "none"], 2, "invalid choice: '../homefeed'"),
    ],
    ids=["promote-surface", "promote-version", "show-nul", "versions-absolute", "canary-encoded", "retain", "serve"],
)
def test_operator_cli_refuses_hostile_names(argv, code, message, registry, s3_server, monkeypatch, capsys):
    from serving.service.cli import main

    for key, value in {**s3_server.env(), "PINREC_S3_PREFIX": registry.settings.prefix}.items():
        monkeypatch.setenv(key, value)
    try:
        returned = main(argv)
    except SystemExit as exc:  # argparse's usage error
        returned = exc.code
    assert returned == code
    assert message in capsys.readouterr().err
    assert list_keys(registry.client, registry.bucket, registry.settings.prefix + "/") == []


def test_api_refuses_hostile_surfaces_and_never_serves_a_traversed_path(registry, tmp_path):
    manager = VersionManager(registry, ["homefeed"], tmp_path / "cache", poll_interval_s=3600)
    with ServerThread(create_app(manager, start_polling=False)) as server:
        for name in HOSTILE:
            status, body, _ = call(server.host, server.port, "POST", "/v1/retrieve", {"user_id": 1, "surface": name})
            assert status == 422 and "surface" in body["error"], (name, body)
        for path in [
            "/../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/v1/../../../etc/passwd",
            "/v1/retrieve/..%2f..%2fetc%2fpasswd",
            "/static/..%2f..%2fpyproject.toml",
        ]:
            status, body, _ = call(server.host, server.port, "GET", path)
            assert 400 <= status < 500 and "root:" not in str(body) and "[project]" not in str(body), (path, status)


def test_hostile_partition_keys_are_refused_before_any_step_runs(s3_server, tmp_path):
    from assets.config import load_settings
    from assets.data.ingest import bad_row_fraction_check, ingest_events_asset
    from assets.partitions import daily_partitions
    from assets.resources import S3Resource, build_resources

    settings = load_settings({**os.environ, "PINREC_DATA_DIR": str(tmp_path / "data"), "PINREC_SOURCE": "simulated"})
    resources = build_resources(settings)
    partitions = daily_partitions(settings.start_date)
    ingest = [ingest_events_asset(partitions, settings.vocabulary), bad_row_fraction_check(settings.max_bad_fraction)]
    resources["s3"] = S3Resource(endpoint_url=s3_server.endpoint_url, bucket=s3_server.bucket)
    with dg.instance_for_test() as instance:
        for key in HOSTILE_DAYS:
            assert not partitions.has_partition_key(key)
            with pytest.raises(dg.DagsterUnknownPartitionError):
                dg.materialize(ingest, partition_key=key, resources=resources, instance=instance)
        assert instance.get_runs() == []  # no run was even created
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_settings_refuse_hostile_surface_names():
    from assets.config import load_settings

    for value in ["../homefeed", "homefeed,/etc/passwd", "%2e%2e"]:
        with pytest.raises(ValueError, match="unknown surfaces"):
            load_settings({**os.environ, "PINREC_SURFACES": value})
