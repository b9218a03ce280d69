"""storage.s3 helpers against a real SeaweedFS server (fixture ``s3_server`` in conftest.py)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.seaweedfs import SeaweedFS
from storage import s3

pytestmark = pytest.mark.services  # starts processes of its own

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@pytest.fixture
def client(s3_server):
    return s3.make_client(s3_server.settings())


@pytest.fixture
def prefix(s3_server) -> str:
    return s3_server.settings().key("tests", uuid.uuid4().hex[:12])


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ...
            members.append(int(entry.name))
    return members


def _port_closed(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) != 0


def test_put_get_list_round_trip(s3_server, client, prefix):
    bucket = s3_server.bucket
    assert s3.ensure_bucket(client, bucket) is False  # created at server start; idempotent
    keys = [f"{prefix}/obj-{i:02d}" for i in range(7)]
    for i, key in enumerate(keys):
        etag = s3.put_bytes(client, bucket, key, f"payload {i}".encode())
        assert etag
    assert s3.get_bytes(client, bucket, keys[3]) == b"payload 3"
    assert s3.list_keys(client, bucket, prefix + "/", page_size=3) == keys  # 3 pages
    assert s3.list_keys(client, bucket, prefix + "/nothing-here") == []
    assert s3.object_exists(client, bucket, keys[0])
    assert not s3.object_exists(client, bucket, prefix + "/missing")
    with pytest.raises(s3.ObjectNotFoundError, match="does not exist"):
        s3.get_bytes(client, bucket, prefix + "/missing")


def test_multipart_upload_and_download(s3_server, client, prefix, tmp_path):
    src = tmp_path / "big.bin"
    data = os.urandom(12 * MiB)
    src.write_bytes(data)
    config = s3.transfer_config(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    key = f"{prefix}/big.bin"
    s3.upload_file(client, s3_server.bucket, key, src, config=config)
    head = client.head_object(Bucket=s3_server.bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # a 3-part multipart upload
    out = tmp_path / "out" / "big.bin"
    dst = s3.download_file(client, s3_server.bucket, key, out, config=config)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize(
    ("access_key", "secret_key", "expected_code"),
    [
        (None, "wrong-secret", "SignatureDoesNotMatch"),
        ("PRUNKNOWNKEY0000000", "wrong-secret", "InvalidAccessKeyId"),
        ("unsigned", None, "AccessDenied"),
    ],
)
def test_bad_credentials_are_rejected(s3_server, access_key, secret_key, expected_code):
    if access_key == "unsigned":
        bad = boto3.session.Session().client(
            "s3",
            endpoint_url=s3_server.endpoint_url,
            region_name="us-east-1",
            config=Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}),
        )
    else:
        settings = s3.S3Settings(
            endpoint_url=s3_server.endpoint_url,
            access_key=access_key or s3_server.access_key,
            secret_key=secret_key,
            bucket=s3_server.bucket,
        )
        bad = s3.make_client(settings, max_attempts=1)
    with pytest.raises(ClientError) as info:
        bad.list_objects_v2(Bucket=s3_server.bucket)
    assert info.value.response["Error"]["Code"] == expected_code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as info:
        s3.get_bytes(bad, s3_server.bucket, "any/key")
    assert info.value.response["Error"]["Code"] == expected_code
    assert any("AWS_SECRET_ACCESS_KEY" in note for note in info.value.__notes__)


def test_put_if_absent_refuses_to_overwrite(s3_server, client, prefix):
    bucket, key = s3_server.bucket, f"{prefix}/manifest.json"
    assert s3.put_if_absent(client, bucket, key, b"first") is True
    assert s3.put_if_absent(client, bucket, key, b"second") is False
    assert s3.get_bytes(client, bucket, key) == b"first"

    race_key = f"{prefix}/race.json"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: s3.put_if_absent(client, bucket, race_key, b"%d" % i), range(8)))
    assert results.count(True) == 1
    assert s3.get_bytes(client, bucket, race_key) == b"%d" % results.index(True)


def test_settings_from_env_and_repr_hides_secret():
    env = {
        "PINREC_S3_ENDPOINT_URL": "http://127.0.0.1:9999",
        "PINREC_S3_BUCKET": "artifacts",
        "PINREC_S3_PREFIX": "/team/pinrec/",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY": "super-secret-value-123",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    settings = s3.S3Settings.from_env(env)
    assert settings.endpoint_url == "http://127.0.0.1:9999"
    assert settings.bucket == "artifacts"
    assert settings.prefix == "team/pinrec"
    assert settings.region == "eu-west-1"
    assert settings.access_key == "AKIAEXAMPLEKEY"
    assert settings.secret_key == "super-secret-value-123"
    assert settings.key("versions", "home", "v1/") == "team/pinrec/versions/home/v1"
    champion = settings.uri("serving", "champion.json")
    assert champion == "s3://artifacts/team/pinrec/serving/champion.json"
    for text in (repr(settings), str(settings), f"{settings}"):
        assert "super-secret-value-123" not in text
        assert "AKIAEXAMPLEKEY" not in text

    defaults = s3.S3Settings.from_env({})
    assert defaults.endpoint_url is None
    assert defaults.bucket == "pinrec" and defaults.prefix == "pinrec-ops"
    assert defaults.region == "us-east-1"
    assert defaults.access_key is None and defaults.secret_key is None
    with pytest.raises(ValueError, match="incomplete"):
        s3.S3Settings.from_env({"AWS_ACCESS_KEY_ID": "only-the-key"})


def test_parse_s3_uri():
    assert s3.parse_s3_uri("s3://bucket/a/b/c.json") == ("bucket", "a/b/c.json")
    assert s3.parse_s3_uri("s3://bucket") == ("bucket", "")
    for bad in ("http://bucket/key", "s3:///key", "bucket/key"):
        with pytest.raises(ValueError):
            s3.parse_s3_uri(bad)


def test_server_env_reaches_a_child_process(s3_server, prefix):
    code = (
        "from storage import s3; st = s3.S3Settings.from_env(); c = s3.make_client(st);"
        f"s3.put_bytes(c, st.bucket, {prefix + '/child'!r}, b'from child')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PINREC_S3_"))}
    subprocess.run([sys.executable, "-c", code], env=env | s3_server.env(), cwd=REPO, check=True)
    client = s3.make_client(s3_server.settings())
    assert s3.get_bytes(client, s3_server.bucket, prefix + "/child") == b"from child"


@pytest.mark.parametrize("freeze", [False, True], ids=["sigterm", "sigkill-after-timeout"])
def test_stop_leaves_no_process(tmp_path, freeze):
    server = SeaweedFS(tmp_path / "weed", create_bucket=False, stop_timeout=0.5 if freeze else 15)
    with server:
        pid, port = server.pid, server.ports["s3"]
        assert server.running and not _process_gone(pid)
        if freeze:  # a stopped process ignores SIGTERM: stop() has to escalate to SIGKILL
            os.kill(pid, signal.SIGSTOP)
    assert not server.running
    assert _process_gone(pid)
    assert _group_members(pid) == []
    assert _port_closed("127.0.0.1", port)
    assert not list(Path("/tmp").glob(f"seaweedfs-*-grpc-{server.ports['s3_grpc']}.sock"))


def test_a_restart_keeps_the_address_credentials_and_data(tmp_path):
    """The S3 server stopped and started again (the soak's outage) answers at the same endpoint
    with the same keys, so a client made before the outage and every child's environment keep
    working; the objects written before are there; the per-start TLS key is new."""
    server = SeaweedFS(tmp_path / "weed")
    with server:
        env, tls_key = server.env(), server.tls_files["key"].read_bytes()
        client = s3.make_client(server.settings(), max_attempts=1)
        s3.put_bytes(client, server.bucket, "before/outage", b"kept")
        server.stop()
        with pytest.raises((botocore.exceptions.EndpointConnectionError, ClientError)):
            s3.get_bytes(client, server.bucket, "before/outage")
        server.start()
        assert server.env() == env
        assert s3.get_bytes(client, server.bucket, "before/outage") == b"kept"
        assert server.tls_files["key"].read_bytes() != tls_key


def test_cli_writes_env_file_and_stops_on_sigterm(tmp_path):
    env_file = tmp_path / "seaweedfs.env"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.seaweedfs", "--data-dir", str(tmp_path / "weed"), "--env-file", str(env_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "CLI did not write the env file in time"
            time.sleep(0.1)
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        env = {}
        for line in env_file.read_text().splitlines():
            export, assignment = line.split(" ", 1)
            assert export == "export"
            name, value = assignment.split("=", 1)
            env[name] = shlex.split(value)[0]
        settings = s3.S3Settings.from_env(env)
        assert settings.endpoint_url and settings.secret_key
        client = s3.make_client(settings)
        assert s3.ensure_bucket(client, settings.bucket) is False  # the CLI created it
        weed_pid = int(env["PINREC_SEAWEEDFS_PID"])
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "SeaweedFS S3 endpoint: http://127.0.0.1:" in out
    assert _process_gone(weed_pid)
    assert not env_file.exists()


def test_startup_timeout_is_clear_and_cleans_up(tmp_path):
    from devstack.seaweedfs import SeaweedFSError

    data_dir = tmp_path / "slow"
    server = SeaweedFS(data_dir, startup_timeout=0.01, create_bucket=False)
    with pytest.raises(SeaweedFSError, match="did not answer within") as info:
        server.start()
    assert "weed.log" in str(info.value)
    assert not server.running
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(data_dir) in _read_cmdline(p)]
    assert leftovers == []


def _read_cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
