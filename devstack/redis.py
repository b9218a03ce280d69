"""A throwaway `redis-server` (Debian package; scripts/setup.sh installs it) on 127.0.0.1 and a
free port, for Feast's Redis online store in tests and benchmarks and as a Celery broker."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.processes import (
    LOCALHOST,
    free_port,
    start_process_group,
    stop_process_group,
)


class RedisServerMissing(RuntimeError):
    pass


class RedisServer:
    """A `redis-server` on 127.0.0.1 and a free port, without persistence, in its own process
    group; stopped by its pid (`with` block, or start()/stop())."""

    def __init__(self, binary: str | None = None, start_timeout: float = 30.0) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.start_timeout = start_timeout
        self.host = LOCALHOST
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def connection_string(self) -> str:
        """Feast's `connection_string` for this server."""
        return f"{self.host}:{self.port}"

    def start(self) -> RedisServer:
        if not Path(self.binary).exists():
            raise RedisServerMissing(
                f"redis-server not found ({self.binary}): install Debian's redis-server "
                "(scripts/setup.sh does when run as root: apt-get install redis-server)"
            )
        self.port = free_port(self.host)
        self._log = tempfile.TemporaryFile()  # the server's log; read back if it fails to start
        self.process = start_process_group(
            [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no"],
            log=self._log,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + self.start_timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=1)
        while True:
            returncode = self.process.poll()
            if returncode is not None:
                self._log.seek(0)
                output = self._log.read().decode("utf-8", "replace")
                self.stop()
                raise RuntimeError(f"redis-server exited with {returncode}:\n{output[-2000:]}")
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on {self.connection_string} in {self.start_timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process)
        if self._log is not None:
            self._log.close()
        self.process, self._log = None, None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
