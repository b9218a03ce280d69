"""Free ports, process groups and readiness: the plumbing every local server here shares."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCALHOST = "127.0.0.1"


def free_ports(count: int = 1, host: str = LOCALHOST) -> list[int]:
    """`count` distinct free TCP ports on `host` (all held open together while chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOCALHOST) -> int:
    return free_ports(1, host)[0]


def free_port_pair(offset: int, avoid: set[int] = frozenset(), host: str = LOCALHOST, tries: int = 200) -> int:
    """A free port p such that p + offset is free too."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if port + offset > 65535 or port in avoid or port + offset in avoid:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind((host, port + offset))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free pair of ports {offset} apart on {host}")


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def reset_signals() -> None:
    """preexec_fn for child servers: default SIGINT/SIGTERM handling, so stopping by pid works
    even when the parent was started in the background (which ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when the forking thread dies (Linux), and
    resets SIGINT/SIGTERM to their defaults. PR_SET_PDEATHSIG fires when the *thread* that
    forked exits, so use it from the main thread only (None elsewhere)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        reset_signals()
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def start_process_group(
    cmd: list[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    log: Any = subprocess.DEVNULL,
    die_with_parent: bool = True,
) -> subprocess.Popen:
    """Start `cmd` as the leader of a new process group (stop it with stop_process_group), with
    default signal handling, its output to `log` (a file object, DEVNULL or None)."""
    preexec = (pdeathsig_preexec() if die_with_parent else None) or reset_signals
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec,
        close_fds=True,
    )


def wait_exited(pid: int, timeout: float) -> bool:
    """Wait (without reaping) until child `pid` has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # already reaped
        if info is not None and info.si_pid == pid:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop a process started as a group leader by its pid: `sig` (SIGTERM) to the group,
    SIGKILL after `timeout`, then anything left in the group, then reap it. Returns its exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if not wait_exited(proc.pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            wait_exited(proc.pid, 10.0)
        # The leader is a zombie now (not reaped), so its group id cannot have been reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - kernel trouble
        raise RuntimeError(f"pid {proc.pid} did not exit after SIGKILL") from exc


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_ready(
    proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float, log_path: Path | None = None
) -> None:
    """Wait until `ready()` or the process exits; raise with the log's tail if it never got ready
    (the process is stopped then)."""
    if wait_until(lambda: proc.poll() is not None or ready(), timeout=timeout) and proc.poll() is None:
        return
    code = proc.poll()
    if code is None:
        stop_process_group(proc)
    raise RuntimeError(
        f"{what} did not get ready in {timeout:g} s (exit code {code}); last lines of {log_path}:\n{tail(log_path)}"
        if log_path
        else f"{what} did not get ready in {timeout:g} s (exit code {code})"
    )


def tail(path: Path | None, lines: int = 40) -> str:
    """The last `lines` lines of a log file (at most its last 64 KiB)."""
    if path is None:
        return ""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])
