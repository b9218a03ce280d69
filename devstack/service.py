"""The retrieval service under test: the operator's command (`python -m serving.service.cli serve`) in
its own process group, or the FastAPI app under a real uvicorn server in a thread; and plain
stdlib HTTP calls to either."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from devstack.processes import LOCALHOST, free_port, start_process_group, wait_ready

REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerThread:
    """Run a FastAPI app under a real uvicorn server in a daemon thread (``with`` block)."""

    def __init__(self, app: Any, host: str = LOCALHOST, port: int | None = None) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def call(
    host: str,
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    timeout: float = 30.0,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request; returns (status, parsed JSON or text, headers)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        try:
            parsed: Any = json.loads(payload)
        except ValueError:
            parsed = payload.decode("utf-8", "replace")
        return resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        if own:
            conn.close()


def service_ready(port: int, host: str = LOCALHOST) -> bool:
    """True once the service's /readyz answers 200."""
    try:
        return call(host, port, "GET", "/readyz", timeout=2)[0] == 200
    except OSError:
        return False


def start_cli_service(
    env: dict[str, str], surfaces: list[str], cache_dir, *extra_args: str, log_path=None, ready_timeout: float = 120.0
) -> tuple[subprocess.Popen, int]:
    """Start ``python -m serving.service.cli serve`` (the operator's command) in its own process group
    on a free port, with the CLI's default bind address; return ``(process, port)`` once
    ``/readyz`` answers 200. Stop it with `devstack.processes.stop_process_group`. ``env`` must
    carry the S3 settings; output goes to ``log_path`` (default: discarded)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "serving.service.cli",
        "serve",
        "--port",
        str(port),
        "--cache-dir",
        str(cache_dir),
        *[arg for s in surfaces for arg in ("--surface", s)],
        *extra_args,
    ]
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = start_process_group(cmd, cwd=REPO_ROOT, env=env, log=out, die_with_parent=False)
    if log_path:
        out.close()  # the child holds its own copy
    wait_ready(
        proc,
        lambda: service_ready(port),
        f"the service on port {port}",
        ready_timeout,
        Path(log_path) if log_path else None,
    )
    return proc, port
