"""The Dagster UI on the project's workspace: `dagster dev` (webserver and daemon, so schedules
and sensors tick) or the webserver alone, on 127.0.0.1 and a free port, in its own process group.

`dagster dev` started from a shell with `&` ignores SIGINT/SIGTERM; the child here gets default
signal handling back (`processes.reset_signals`) so it is stopped by its pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from devstack.processes import (
    LOCALHOST,
    free_port,
    start_process_group,
    stop_process_group,
    wait_ready,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"


def ui_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2):
            return True
    except OSError:
        return False


def dagster_command(*, daemon: bool, host: str, port: int, workspace: Path = WORKSPACE) -> list[str]:
    if daemon:
        return [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "--host", host, "--port", str(port)]
    return [sys.executable, "-m", "dagster_webserver", "-w", str(workspace), "-h", host, "-p", str(port)]


class DagsterUI:
    """`with DagsterUI(dagster_home, env) as ui: ui.url` starts the UI and waits until it answers."""

    def __init__(
        self,
        dagster_home: Path,
        env: dict[str, str] | None = None,
        *,
        daemon: bool = False,
        host: str = LOCALHOST,
        port: int | None = None,
        log_path: Path | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self.dagster_home = Path(dagster_home)
        self.env = {
            **(os.environ if env is None else env),
            "DAGSTER_HOME": str(self.dagster_home),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), (env or os.environ).get("PYTHONPATH")])),
        }
        self.daemon, self.host, self.port = daemon, host, port or free_port(host)
        self.log_path = log_path or self.dagster_home / "webserver.log"
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> DagsterUI:
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = start_process_group(
                dagster_command(daemon=self.daemon, host=self.host, port=self.port),
                cwd=REPO_ROOT,
                env=self.env,
                log=log,
            )
        wait_ready(
            self.process, lambda: ui_ready(self.url), f"the Dagster UI at {self.url}", self.ready_timeout, self.log_path
        )
        return self

    def wait(self) -> int:
        if self.process is None:
            raise RuntimeError("the Dagster UI is not started")
        return self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, timeout=60)
            self.process = None

    def __enter__(self) -> DagsterUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
