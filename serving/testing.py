"""Small helpers for tests and benchmarks of the service: a tiny random-weight PinRec, a
uvicorn server in a thread, plain-stdlib HTTP calls."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any

import torch


def tiny_model(n_items: int = 300, seed: int = 0, d_model: int = 32, item_id_offset: int = 1000):
    """A deterministic random-weight PinRec whose item ids are ``item_id_offset + 1..V``."""
    from training.model import PinRec, PinRecConfig

    torch.manual_seed(seed)
    model = PinRec(PinRecConfig(n_items=n_items, d_model=d_model, n_layers=1, n_heads=2,
                                max_len=50, dropout=0.0))
    with torch.no_grad():
        model.item_ids[1:] += item_id_offset - 0
    return model.eval()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """Run a FastAPI app under a real uvicorn server in a daemon thread (``with`` block)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port,
                                                    log_level="warning", lifespan="on"))
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


def call(host: str, port: int, method: str, path: str, body: Any = None, *,
         raw: bytes | None = None, timeout: float = 30.0,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, Any, dict[str, str]]:
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


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def stop_process_group(proc, timeout: float = 30.0) -> None:
    """Stop a server started with `start_new_session=True` by its pid: SIGTERM to its process
    group, SIGKILL after `timeout`, then reap it."""
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()



def start_cli_service(env: dict[str, str], surfaces: list[str], cache_dir, *extra_args: str,
                      log_path=None, ready_timeout: float = 120.0):
    """Start ``python -m serving.cli serve`` (the operator's command) in its own process group
    on a free port, with the CLI's default bind address; return ``(process, port)`` once
    ``/readyz`` answers 200. Stop it with :func:`stop_process_group`. ``env`` must carry the S3
    settings; output goes to ``log_path`` (default: discarded)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    port = free_port()
    cmd = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port), "--cache-dir", str(cache_dir),
           *[arg for s in surfaces for arg in ("--surface", s)], *extra_args]
    env = {**env, "PYTHONPATH": str(root)}
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if log_path:
        out.close()  # the child holds its own copy

    def ready() -> bool:
        try:
            return call("127.0.0.1", port, "GET", "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    if not wait_until(lambda: ready() or proc.poll() is not None, timeout=ready_timeout) or proc.poll() is not None:
        if proc.poll() is None:
            stop_process_group(proc)
        tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
        raise RuntimeError(f"the service did not get ready on port {port} (exit {proc.returncode}):\n{tail}")
    return proc, port
