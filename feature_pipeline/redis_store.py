"""Feast's Redis online store (feature_repo/feature_store.production.yaml): open a store on that
profile, fill a store from offline tables, read item features, and run a throwaway local
`redis-server` (Debian package; scripts/setup.sh installs it) for tests and benchmarks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from feature_pipeline.store import (
    FEATURE_REPO,
    FeastSettings,
    apply_repo,
    materialize_days,
    open_store,
    write_offline_tables,
)

if TYPE_CHECKING:
    from feast import FeatureStore

PRODUCTION_CONFIG = FEATURE_REPO / "feature_store.production.yaml"
CONNECTION_VARIABLE = "PINREC_REDIS_CONNECTION"
ITEM_FEATURE_SERVICE = "item_features_service"


def open_redis_store(data_dir: Path, connection: str) -> "FeatureStore":
    """A FeatureStore on the production (Redis) profile, its registry and offline tables under
    `data_dir`, its online store at `connection` ("host:port[,password=...]")."""
    previous = os.environ.get(CONNECTION_VARIABLE)
    os.environ[CONNECTION_VARIABLE] = connection
    try:
        return open_store(FeastSettings(data_dir=data_dir, config_file=PRODUCTION_CONFIG))
    finally:
        if previous is None:
            del os.environ[CONNECTION_VARIABLE]
        else:
            os.environ[CONNECTION_VARIABLE] = previous


def fill_store(store: "FeatureStore", data_dir: Path, tables_by_day: Mapping[date, dict[str, pd.DataFrame]]) -> None:
    """Write each day's offline tables under `data_dir`, apply feature_repo/ and materialize the
    whole span of the views given into the store's online store (what the online_features asset
    does for all three views)."""
    settings = FeastSettings(data_dir=data_dir)
    for day, tables in tables_by_day.items():
        write_offline_tables(settings, day, tables)
    apply_repo(store)
    days = sorted(tables_by_day)
    views = sorted({view for tables in tables_by_day.values() for view in tables})
    materialize_days(store, days[0], days[-1], views)


def online_item_features(store: "FeatureStore", item_ids: list[int]) -> pd.DataFrame:
    """The item_features_service features of each item, as the online store serves them."""
    response = store.get_online_features(
        features=store.get_feature_service(ITEM_FEATURE_SERVICE),
        entity_rows=[{"item_id": int(i)} for i in item_ids],
    )
    return pd.DataFrame(response.to_dict())


class RedisServerMissing(RuntimeError):
    pass


class RedisServer:
    """A `redis-server` on 127.0.0.1 and a free port, without persistence, in its own process
    group; stopped by its pid (`with` block, or start()/stop())."""

    def __init__(self, binary: str | None = None, start_timeout: float = 30.0) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def connection_string(self) -> str:
        """Feast's `connection_string` for this server."""
        return f"{self.host}:{self.port}"

    def start(self) -> RedisServer:
        from serving.testing import free_port

        if not Path(self.binary).exists():
            raise RedisServerMissing(
                f"redis-server not found ({self.binary}): install Debian's redis-server "
                "(scripts/setup.sh does when run as root: apt-get install redis-server)")
        self.port = free_port(self.host)
        self._log = tempfile.TemporaryFile()  # the server's log; read back if it fails to start
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
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
        from serving.testing import stop_process_group

        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process)
        if self._log is not None:
            self._log.close()
        self.process, self._log = None, None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
