"""Security of artifacts and credentials (issue 6, "Security"):

* a published object is used only after its sha256 matches the manifest: a tampered model or
  index is refused with an IntegrityError before anything reads it;
* model weights and training checkpoints load with ``torch.load(weights_only=True)``: a malicious
  pickle published with a manifest that matches it, or planted as the checkpoint a training run
  resumes from, is refused, and its payload never runs;
* S3 credentials come from the environment only and never reach the Dagster event log, run
  tags, run config, asset or check metadata, captured logs or the files a run writes: neither
  they nor SeaweedFS's other secrets (the JWT keys of its security.toml, its TLS key), over a
  whole lifecycle run in process and a `pinrec-ops live` run (the online-mode assets);
* the retrieval service (and the other servers the project starts) bind 127.0.0.1 by default.
"""

import json
import os
import pickle
import shutil
import uuid
from datetime import date
from pathlib import Path

import dagster as dg
import psutil
import pytest
import torch

from devstack.processes import stop_process_group
from devstack.service import start_cli_service
from serving.registry.manifest import INDEX_FILE, ITEM_IDS_FILE, MODEL_FILE, IntegrityError, LoadCheckError
from serving.registry.publish import publish_model
from serving.service.checks import checked_registry
from serving.service.retriever import LoadedVersion
from serving.service.versions import VersionManager
from storage.s3 import put_bytes
from tests.helpers import TINY_MODEL, mechanics_gate, tiny_model


class _WritesMarker:
    """Unpickling this runs code: it writes `marker` (what an attacker's payload would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _malicious_weights(path: Path, marker: Path) -> Path:
    torch.save({"item_emb.table.weight": _WritesMarker(marker)}, path)
    return path


@pytest.fixture(scope="module")
def published(s3_server, tmp_path_factory):
    """A registry with one good champion version of homefeed, fetched once."""
    tmp = tmp_path_factory.mktemp("security")
    registry = checked_registry(s3_server.settings().with_prefix(f"sec-{uuid.uuid4().hex[:8]}"))
    good, _ = publish_model(registry, "homefeed", tiny_model(seed=0))
    registry.promote("homefeed", good)
    return {
        "registry": registry,
        "good": good,
        "tmp": tmp,
        "local": registry.fetch("homefeed", good, tmp / "reference"),
    }


def test_the_payload_is_live_when_unpickled_without_weights_only(tmp_path):
    """Control: the payload the next tests plant does run under a plain torch.load."""
    marker = tmp_path / "marker"
    path = _malicious_weights(tmp_path / "model.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("name", [MODEL_FILE, INDEX_FILE])
def test_a_tampered_object_is_refused_by_its_checksum_before_it_is_read(published, name, tmp_path):
    registry, marker = published["registry"], tmp_path / "marker"
    version, _ = publish_model(registry, "homefeed", tiny_model(seed=2))
    body = _malicious_weights(tmp_path / "evil.pt", marker).read_bytes()
    put_bytes(registry.client, registry.bucket, registry.version_key("homefeed", version, name), body)

    with pytest.raises(IntegrityError, match=f"{name} (sha256|has)"):
        registry.fetch("homefeed", version, tmp_path / "cache")
    assert not (tmp_path / "cache" / "homefeed" / version).exists()  # nothing of it is kept
    assert not marker.exists()


def test_a_malicious_pickle_with_a_matching_manifest_is_refused_by_weights_only(published, tmp_path):
    registry, good, marker = published["registry"], published["good"], tmp_path / "marker"
    reference = published["local"]
    # An attacker with write access to the bucket publishes a complete version whose manifest
    # lists the malicious model.pt's real sha256 and size: every checksum matches.
    forged = registry.publish(
        "homefeed",
        {
            MODEL_FILE: _malicious_weights(tmp_path / "evil.pt", marker),
            INDEX_FILE: reference.path(INDEX_FILE),
            ITEM_IDS_FILE: reference.path(ITEM_IDS_FILE),
        },
        index=reference.manifest["index"],
        config=reference.manifest["config"],
    )
    local = registry.fetch("homefeed", forged, tmp_path / "cache")  # checksums pass

    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        LoadedVersion.from_local(local)
    assert not marker.exists()

    # Promotion loads it first and refuses it; named past that check (an old tool, a hand-written
    # pointer), it is refused by the running service, which keeps serving the good champion.
    with pytest.raises(LoadCheckError, match="Weights only load failed"):
        registry.promote("homefeed", forged)
    assert registry.champion("homefeed") == good and not marker.exists()
    manager = VersionManager(registry, ["homefeed"], tmp_path / "serving-cache", poll_interval_s=3600)
    manager.refresh()
    assert manager.loaded()["homefeed"]["champion"] == good
    registry.promote("homefeed", forged, check=False)
    try:
        manager.refresh()
        assert manager.loaded()["homefeed"]["champion"] == good
        assert "UnpicklingError" in manager.errors["homefeed"]["error"]
        assert not marker.exists()
    finally:
        registry.promote("homefeed", good)


def test_a_malicious_training_checkpoint_is_refused_on_resume(tmp_path):
    """Training resumes from `lightning/last.ckpt` with weights_only=True: a planted pickle is
    refused before a step runs, and its payload never runs."""
    from tests.helpers import SMALL_WORLD
    from training.train import TrainConfig, pretrain
    from world.simulator import SimulatedWorld

    world = SimulatedWorld(SMALL_WORLD)
    events = world.day(world.days()[0])
    marker, out = tmp_path / "marker", tmp_path / "run"
    (out / "lightning").mkdir(parents=True)
    torch.save({"state_dict": _WritesMarker(marker), "epoch": 0}, out / "lightning" / "last.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        pretrain(events, out, train_cfg=TrainConfig(max_epochs=1, threads=1, progress_bar=False))
    assert not marker.exists()


def server_secrets(server_dir: Path, access_key: str, secret_key: str) -> dict[str, str]:
    """Every secret of one SeaweedFS start: the S3 keys, the JWT signing keys of its
    security.toml, and the lines of its TLS private key (a PEM body is searched line by line, so
    that an escaped or re-wrapped copy is found too)."""
    import tomllib

    security = tomllib.loads((server_dir / "config" / "security.toml").read_text())
    secrets = {
        "S3 access key": access_key,
        "S3 secret key": secret_key,
        "JWT signing key": security["jwt"]["signing"]["key"],
        "JWT filer signing key": security["jwt"]["filer_signing"]["key"],
    }
    pem = (server_dir / "config" / "tls" / "seaweedfs.key").read_text().splitlines()
    body = [line for line in pem if line and not line.startswith("-----")]
    secrets.update({f"TLS key line {i}": line for i, line in enumerate(body) if len(line) >= 16})
    assert len(secrets) >= 5 and all(len(v) >= 16 for v in secrets.values())
    return secrets


def _assert_nowhere(secrets: dict[str, str], texts: dict[str, str]) -> None:
    for where, text in texts.items():
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} appears in {where}"


def _files(root: Path, skip: Path | None = None) -> dict[str, str]:
    return {
        str(path): path.read_bytes().decode("latin-1")
        for path in root.rglob("*")
        if path.is_file() and (skip is None or skip not in path.parents)
    }


def test_no_secret_reaches_logs_tags_metadata_or_files_of_a_whole_lifecycle(s3_server, tmp_path, monkeypatch, capfd):
    """Every asset and check of nightly_refresh and retrain (ingest to promotion, open loop):
    the S3 keys, the server's JWT keys and its TLS key appear in no run's event log, tags,
    config, asset metadata, check metadata, captured output or any file the runs wrote."""
    from assets.config import REPO_ROOT, load_settings
    from assets.resources import (
        EventSourceResource,
        S3Resource,
        build_resources,
    )
    from orchestration.runs import run_job
    from orchestration.steps import DATA_ASSET_KEYS

    secrets = server_secrets(s3_server.data_dir, s3_server.access_key, s3_server.secret_key)
    assert secrets["TLS key line 0"] in s3_server.tls_files["key"].read_text()
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)  # the only place the runs get them from
    env = {
        **os.environ,
        "PINREC_DATA_DIR": str(tmp_path / "data"),
        "PINREC_SOURCE": "simulated",
        "PINREC_CACHE_DIR": str(REPO_ROOT / "var" / "cache"),
    }
    settings = load_settings(env)
    resources = build_resources(settings)
    resources["event_source"] = EventSourceResource(
        **{**resources["event_source"].model_dump(), "sim_users": 120, "sim_items": 400, "sim_events_per_day": 6000}
    )
    resources["training"] = resources["training"].with_plan(**TINY_MODEL)
    resources["s3"] = S3Resource(
        endpoint_url=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=f"sec-{uuid.uuid4().hex[:8]}"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    days = [date(2026, 1, d) for d in (1, 2, 3, 4)]
    texts = {}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        results = [
            run_job("nightly_refresh", day, instance, settings=settings, assets=DATA_ASSET_KEYS, resources=resources)
            for day in days
        ]
        results.append(
            run_job(
                "retrain",
                days[-1],
                instance,
                settings=settings,
                resources=resources,
                run_config=mechanics_gate(settings.surfaces),
            )
        )
        assert all(r.success for r in results)
        materialized = {e.asset_key.to_user_string() for r in results for e in r.get_asset_materialization_events()}
        assert {
            "events",
            "online_features",
            "pretrained_model",
            "homefeed/champion",
            "related/champion",
        } <= materialized
        assert resources["s3"].registry().champion("homefeed")  # S3 was used, to the end
        for result in results:
            run = instance.get_run_by_id(result.run_id)
            texts[f"run {result.run_id} tags"] = repr(run.tags)
            texts[f"run {result.run_id} config"] = repr(run.run_config)
            texts[f"run {result.run_id} event log"] = "\n".join(repr(r) for r in instance.all_logs(result.run_id))
            texts[f"run {result.run_id} asset metadata"] = "\n".join(
                repr(e.materialization.metadata) for e in result.get_asset_materialization_events()
            )
            texts[f"run {result.run_id} check metadata"] = "\n".join(
                repr(c.metadata) for c in result.get_asset_check_evaluations()
            )
    captured = capfd.readouterr()
    texts["captured stdout/stderr"] = captured.out + captured.err
    texts.update(_files(home))  # sqlite stores, compute logs
    texts.update(_files(tmp_path / "data"))  # lake, Feast, models, lifecycle state, version caches
    _assert_nowhere(secrets, texts)


def test_no_secret_of_the_live_loops_s3_server_reaches_what_the_loop_left(live_loop):
    """`pinrec-ops live` (tests/conftest.py: its own SeaweedFS, the online canary stage, the drift
    sensor and the weekly schedule, the in-process retrieval service, the SASRec baseline): the
    server's S3 keys, JWT keys and TLS key appear in no file of the Dagster instance, of the
    loop's data folder or anywhere else under var/ but the server's own folder, nor in the
    command's output; the environment file with the keys is removed when the command ends."""
    server_dir = live_loop["var"] / "seaweedfs"
    [identity] = json.loads((server_dir / "s3.json").read_text())["identities"]
    [credentials] = identity["credentials"]
    secrets = server_secrets(server_dir, credentials["accessKey"], credentials["secretKey"])
    assert not (live_loop["var"] / "s3.env").exists()
    texts = {"stdout": live_loop["stdout"], "stderr": live_loop["stderr"]}
    texts.update(_files(live_loop["tmp"], skip=server_dir))
    assert any("dagster_home" in name for name in texts) and any("lifecycle" in name for name in texts)
    _assert_nowhere(secrets, texts)


def _listening_addresses(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_the_service_binds_127_0_0_1_by_default(published, s3_server, tmp_path):
    from orchestration.cli import build_parser as ops_parser
    from serving.service.cli import build_parser as serving_parser

    assert serving_parser().parse_args(["serve", "--surface", "homefeed"]).host == "127.0.0.1"
    assert ops_parser().parse_args(["ui"]).host == "127.0.0.1"  # the Dagster UI
    env = {**os.environ, **s3_server.env(), "PINREC_S3_PREFIX": published["registry"].settings.prefix}
    proc, port = start_cli_service(
        env, ["homefeed"], tmp_path / "cache", "--features", "none", "--log-level", "warning"
    )  # no --host
    try:
        assert _listening_addresses(proc.pid) == {"127.0.0.1"}
    finally:
        stop_process_group(proc)
    assert _listening_addresses(s3_server.pid) == {"127.0.0.1"}  # SeaweedFS: every port
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
