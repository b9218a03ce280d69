"""The local S3 server's other ports refuse writes without keys (devstack.seaweedfs): the filer,
master and volume servers speak HTTPS with client certificates and sign writes with JWTs, and
every gRPC port demands mutual TLS (SeaweedFS's own security.toml, keys made per start, mode
0600). A local user without the keys cannot overwrite or delete `champion.json` past the S3
signature check; S3 with credentials works as before. Each refusal has a positive control: the
same request with the keys succeeds, so the port is alive and it is the missing key that fails.
A private server (module scope): before the fix these requests would delete the bucket's data."""

import json
import os
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from devstack.seaweedfs import SeaweedFS, find_weed_binary
from storage.s3 import get_bytes, make_client, put_bytes

pytestmark = pytest.mark.services  # starts processes of its own

CHAMPION_KEY = "pinrec-ops/serving/homefeed/champion.json"
GOOD = b'{"version": "20260105T020000Z-0123abcd"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = SeaweedFS(tmp_path_factory.mktemp("weed-sec"))
    server.start()
    try:
        client = make_client(server.settings())
        put_bytes(client, server.bucket, CHAMPION_KEY, GOOD)
        yield server, client
    finally:
        server.stop()


def _http(
    method: str, url: str, data: bytes | None = None, context: ssl.SSLContext | None = None, headers: dict | None = None
):
    """(status, body) or (exception name, text) for one plain request, no keys."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # an answer: its status is what counts (the body may time out)
        try:
            return exc.code, exc.read()
        except OSError:
            return exc.code, b""
    except (urllib.error.URLError, OSError) as exc:
        return type(exc).__name__, str(exc)


def _keyed_context(server) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.tls_files["ca"]))
    context.load_cert_chain(str(server.tls_files["cert"]), str(server.tls_files["key"]))
    return context


def _assign_with_keys(server) -> str:
    """A real file id for a volume write (the master hands it to a client holding the keys; a
    server without keys hands it to anyone)."""
    if not hasattr(server, "tls_files"):
        status, body = _http("GET", f"http://{server.host}:{server.ports['master']}/dir/assign")
    else:
        status, body = _http(
            "GET", f"https://{server.host}:{server.ports['master']}/dir/assign", context=_keyed_context(server)
        )
    assert status == 200, body
    return json.loads(body)["fid"]


def _unchanged(server, client) -> bool:
    return get_bytes(client, server.bucket, CHAMPION_KEY) == GOOD


def _refused(result) -> bool:
    status = result[0]
    return not (isinstance(status, int) and 200 <= status < 300)


@pytest.mark.parametrize(
    "method,port,path",
    [
        ("PUT", "filer", f"/buckets/{{bucket}}/{CHAMPION_KEY}"),
        ("POST", "filer", f"/buckets/{{bucket}}/{CHAMPION_KEY}"),
        ("DELETE", "filer", f"/buckets/{{bucket}}/{CHAMPION_KEY}"),
        ("GET", "master", "/dir/assign"),
        ("GET", "master", "/col/delete?collection={bucket}"),
        ("GET", "master", "/vol/grow?count=1"),
        ("POST", "volume", "/{fid}"),
    ],
    ids=lambda v: str(v),
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_writes_without_keys_are_refused(server, method, port, path, scheme):
    server, client = server
    fid = _assign_with_keys(server) if "{fid}" in path else ""
    url = f"{scheme}://{server.host}:{server.ports[port]}{path.format(bucket=server.bucket, fid=fid)}"
    context = None
    if scheme == "https":  # trusts the server, presents no client certificate
        context = ssl.create_default_context(cafile=str(server.tls_files["ca"]))
    result = _http(method, url, b'{"version": "evil"}' if method in ("PUT", "POST") else None, context)
    assert _refused(result), result
    assert _unchanged(server, client)


def test_the_filer_socket_refuses_writes_without_a_signed_token(server):
    import http.client
    import socket

    server, client = server
    sock_path = server.socket_dir / "filer.sock"
    assert stat.S_IMODE(os.stat(server.socket_dir).st_mode) == 0o700  # other users cannot reach it

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(sock_path))

    conn = UnixConnection("localhost")
    conn.request("PUT", f"/buckets/{server.bucket}/{CHAMPION_KEY}", body=b'{"version": "evil"}')
    status = conn.getresponse().status
    conn.close()
    assert status == 401
    assert _unchanged(server, client)


def test_grpc_writes_without_a_client_certificate_are_refused(server, tmp_path):
    """`weed filer.copy`, the tool any local user has, writing champion.json through the filer's
    gRPC port (host:port.grpcPort) without the keys: refused, the object unchanged."""
    server, client = server
    evil = tmp_path / "champion.json"
    evil.write_text('{"version": "evil"}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")} | {"HOME": str(tmp_path)}
    target = (
        f"http://{server.host}:{server.ports['filer']}.{server.ports['filer_grpc']}"
        f"/buckets/{server.bucket}/pinrec-ops/serving/homefeed/"
    )
    proc = subprocess.run(
        [str(find_weed_binary()), "filer.copy", str(evil), target],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert _unchanged(server, client)


def test_with_the_keys_the_same_ports_answer(server):
    """Positive control: the master answers over HTTPS to a client holding the certificate."""
    server, _ = server
    status, body = _http(
        "GET", f"https://{server.host}:{server.ports['master']}/dir/status", context=_keyed_context(server)
    )
    assert status == 200 and "Topology" in json.loads(body)
    for path in server.tls_files.values():
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600


def test_s3_with_credentials_still_reads_and_writes(server):
    server, client = server
    key = f"tests/sec-{uuid.uuid4().hex[:8]}"
    put_bytes(client, server.bucket, key, b"x" * 100_000)
    assert get_bytes(client, server.bucket, key) == b"x" * 100_000
    assert _unchanged(server, client)
