"""Security of artifacts and credentials (issue 6, "Security"):

* a published object is used only after its sha256 matches the manifest: a tampered model or
  index is refused with an IntegrityError before anything reads it;
* model weights and training checkpoints load with ``torch.load(weights_only=True)``: a malicious
  pickle published with a manifest that matches it, or planted as the checkpoint a training run
  resumes from, is refused, and its payload never runs;
* S3 credentials come from the environment only and never reach the Dagster event log, run
  tags, run config, asset metadata, captured logs or the files a run writes;
* the retrieval service (and the other servers the project starts) bind 127.0.0.1 by default.
"""

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
from serving.publish import publish_model
from serving.registry import (
    INDEX_FILE,
    ITEM_IDS_FILE,
    MODEL_FILE,
    IntegrityError,
    LoadCheckError,
    Registry,
)
from serving.retriever import LoadedVersion
from serving.versions import VersionManager
from storage.s3 import put_bytes
from tests.helpers import tiny_model


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
    registry = Registry(s3_server.settings().with_prefix(f"sec-{uuid.uuid4().hex[:8]}"))
    good, _ = publish_model(registry, "homefeed", tiny_model(seed=0))
    registry.promote("homefeed", good)
    return {"registry": registry, "good": good, "tmp": tmp,
            "local": registry.fetch("homefeed", good, tmp / "reference")}


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
        {MODEL_FILE: _malicious_weights(tmp_path / "evil.pt", marker),
         INDEX_FILE: reference.path(INDEX_FILE), ITEM_IDS_FILE: reference.path(ITEM_IDS_FILE)},
        index=reference.manifest["index"], config=reference.manifest["config"])
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
    from events.simulator import SimulatedWorld
    from tests.helpers import SMALL_WORLD
    from training.train import TrainConfig, pretrain

    world = SimulatedWorld(SMALL_WORLD)
    events = world.day(world.days()[0])
    marker, out = tmp_path / "marker", tmp_path / "run"
    (out / "lightning").mkdir(parents=True)
    torch.save({"state_dict": _WritesMarker(marker), "epoch": 0}, out / "lightning" / "last.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        pretrain(events, out, train_cfg=TrainConfig(max_epochs=1, threads=1, progress_bar=False))
    assert not marker.exists()


def test_credentials_never_reach_logs_tags_metadata_or_run_files(s3_server, tmp_path, monkeypatch, capfd):
    from pinrec_ops.defs.config import REPO_ROOT, load_settings
    from pinrec_ops.defs.resources import (
        EventSourceResource,
        S3Resource,
        build_resources,
    )
    from pinrec_ops.runs import materialize_in_process

    secrets = [s3_server.access_key, s3_server.secret_key]  # random, 20 and 40 characters
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)  # the only place the run gets them from
    env = {**os.environ, "PINREC_DATA_DIR": str(tmp_path / "data"), "PINREC_SOURCE": "simulated",
           "PINREC_CACHE_DIR": str(REPO_ROOT / "var" / "cache")}
    resources = build_resources(load_settings(env))
    resources["event_source"] = EventSourceResource(**{**resources["event_source"].model_dump(),
                                                       "sim_users": 40, "sim_items": 200, "sim_events_per_day": 1000})
    resources["s3"] = S3Resource(endpoint_url=s3_server.endpoint_url, bucket=s3_server.bucket,
                                 prefix=f"sec-{uuid.uuid4().hex[:8]}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_in_process(["events", "event_quarantine"], resources, instance,
                                        partition=date(2026, 1, 3))
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        records = instance.all_logs(result.run_id)
        texts = {
            "run tags": repr(run.tags),
            "run config": repr(run.run_config),
            "event log": "\n".join(repr(r) for r in records),
            "asset metadata": "\n".join(repr(e.materialization.metadata)
                                        for e in result.get_asset_materialization_events()),
        }
    assert any("s3://" in str(v) for v in texts["asset metadata"].split())  # S3 was used
    captured = capfd.readouterr()
    texts["captured stdout/stderr"] = captured.out + captured.err
    for path in [*home.rglob("*"), *(tmp_path / "data").rglob("*")]:  # sqlite stores, compute logs, lake
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a credential appears in {where}"


def _listening_addresses(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def test_the_service_binds_127_0_0_1_by_default(published, s3_server, tmp_path):
    from pinrec_ops.cli import build_parser as ops_parser
    from serving.cli import build_parser as serving_parser

    assert serving_parser().parse_args(["serve", "--surface", "homefeed"]).host == "127.0.0.1"
    assert ops_parser().parse_args(["ui"]).host == "127.0.0.1"  # the Dagster UI
    env = {**os.environ, **s3_server.env(), "PINREC_S3_PREFIX": published["registry"].settings.prefix}
    proc, port = start_cli_service(env, ["homefeed"], tmp_path / "cache", "--features", "none",
                                   "--log-level", "warning")  # no --host
    try:
        assert _listening_addresses(proc.pid) == {"127.0.0.1"}
    finally:
        stop_process_group(proc)
    assert _listening_addresses(s3_server.pid) == {"127.0.0.1"}  # SeaweedFS: every port
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
