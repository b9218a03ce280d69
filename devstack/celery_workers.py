"""Dagster's Celery workers on this machine: `dagster-celery worker start` (the production
command, docs/scale-out.md) for N named workers on one broker, each in its own process group,
with its log in a folder; ready when every worker answers Celery's ping.

    with CeleryWorkers(2, env, log_dir) as workers:   # env: DAGSTER_HOME, PINREC_CELERY_*, ...
        workers.names                                  # ["pinrec-w1@<host>", "pinrec-w2@<host>"]

Each worker runs one step at a time (``--concurrency 1``) unless told otherwise, so two workers
are two places a step can run. Dagster is not imported here (the worker processes import it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from devstack.processes import start_process_group, stop_process_group, tail, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_CONFIG = REPO_ROOT / "deploy" / "celery" / "celery.yaml"
BROKER_VARIABLE, BACKEND_VARIABLE = "PINREC_CELERY_BROKER", "PINREC_CELERY_BACKEND"


def worker_command(name: str, concurrency: int, config: Path = WORKER_CONFIG) -> list[str]:
    cli = Path(sys.executable).parent / "dagster-celery"
    return [
        str(cli),
        "worker",
        "start",
        "-A",
        "dagster_celery.app",
        "-y",
        str(config),
        "-n",
        name,
        "-l",
        "INFO",
        "--",
        f"--concurrency={concurrency}",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
    ]


def ping(broker: str, backend: str | None = None, timeout: float = 1.0) -> set[str]:
    """The names of the workers that answer on `broker`."""
    from celery import Celery

    app = Celery(broker=broker, backend=backend)
    try:
        return {name for reply in app.control.ping(timeout=timeout) or [] for name in reply}
    finally:
        app.close()


class CeleryWorkers:
    """`count` Dagster Celery workers named ``<prefix>-w1@host`` ... on the broker in `env`."""

    def __init__(
        self,
        count: int,
        env: dict[str, str],
        log_dir: Path,
        *,
        concurrency: int = 1,
        prefix: str = "pinrec",
        ready_timeout: float = 120.0,
    ) -> None:
        if BROKER_VARIABLE not in env or "DAGSTER_HOME" not in env:
            raise ValueError(f"the workers' environment needs {BROKER_VARIABLE} and DAGSTER_HOME")
        self.count, self.concurrency = count, concurrency
        bin_dir = str(Path(sys.executable).parent)  # `celery` is started by name
        self.env = {
            **env,
            "PATH": os.pathsep.join([bin_dir, env.get("PATH", os.environ.get("PATH", ""))]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        }
        self.log_dir = Path(log_dir)
        self.ready_timeout = ready_timeout
        host = socket.gethostname()
        self.names = [f"{prefix}-w{i + 1}@{host}" for i in range(count)]
        self.processes: list[subprocess.Popen] = []

    def log_path(self, i: int) -> Path:
        return self.log_dir / f"worker-{i + 1}.log"

    def start(self) -> CeleryWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for i, name in enumerate(self.names):
                with self.log_path(i).open("ab") as log:
                    self.processes.append(
                        start_process_group(
                            worker_command(name.split("@")[0], self.concurrency), cwd=REPO_ROOT, env=self.env, log=log
                        )
                    )
            broker, backend = self.env[BROKER_VARIABLE], self.env.get(BACKEND_VARIABLE)

            def all_ready() -> bool:
                if any(p.poll() is not None for p in self.processes):
                    return True
                return set(self.names) <= ping(broker, backend)

            wait_until(all_ready, timeout=self.ready_timeout, interval=0.5)
            dead = [i for i, p in enumerate(self.processes) if p.poll() is not None]
            missing = set(self.names) - ping(broker, backend)
            if dead or missing:
                raise RuntimeError(
                    f"Celery workers not ready (exited: {[self.names[i] for i in dead]}, "
                    f"not answering: {sorted(missing)}); last lines of {self.log_path(dead[0] if dead else 0)}:\n"
                    f"{tail(self.log_path(dead[0] if dead else 0))}"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.processes:
            stop_process_group(proc, timeout=30)
        self.processes = []

    def __enter__(self) -> CeleryWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
