"""Where a day's feature tables are computed: in this process (the embedded default), or as Dask
tasks on a `dask.distributed` cluster, on this machine or across machines.

| engine  | what runs where                                                                        |
|---------|----------------------------------------------------------------------------------------|
| `local` | `tables.day_feature_tables`: this process streams the event table, one batch at a time |
| `dask`  | one task per row group of the event table (days up to D), each on whichever worker is free; partial
  results merged by a tree of tasks in row order; the tables built from the root |

Both run the same accumulators (`tables._LastEngagements`, `tables._ItemCounts`): a task feeds
them one row group, and partials are merged exactly (counts add, first/last are min/max, the last
`max_length` engagements of ordered stretches merge by one stable sort), so the two engines give
identical tables, byte for byte once written (tests/features/test_feature_engines.py).

Dask, not Spark: Feast's file offline store already runs on Dask (a dependency of feast), Dask
runs the project's numpy code as it is with no JVM, and on this 2-core machine a Spark session
alone took longer to start than the local engine's whole day of 10^6 events (docs/scale-out.md,
"Features on Dask", has the measurement). The cluster: `scheduler` is the address of a running
`dask.distributed` scheduler (``tcp://host:8786``; its workers must see the event table's
path: the shared `PINREC_DATA_DIR`, as for Celery workers); without one, a `LocalCluster` of
`workers` processes (one thread each) is started for the call and stopped after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from events.contract import BUILTIN_CODES, EventCodes
from events.table import EventTable
from feature_pipeline import tables as t

ENGINES = ("local", "dask")
FAN_IN = 8  # partials merged per task of the reduction tree


@dataclass(frozen=True)
class FeatureEngine:
    """Which engine computes the feature tables (`PINREC_FEATURE_ENGINE` etc., see the config)."""

    name: str = "local"
    dask_scheduler: str | None = None  # a running scheduler's address; None: a local cluster per call
    dask_workers: int = 2  # processes of that local cluster

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"unknown feature engine {self.name!r}; one of {ENGINES}")


def compute_feature_tables(
    table: EventTable, day: date, engine: FeatureEngine | None = None, codes: EventCodes = BUILTIN_CODES
) -> dict[str, pd.DataFrame]:
    """The three offline tables of `day` (as `tables.day_feature_tables` returns them), on `engine`."""
    engine = engine or FeatureEngine()
    if engine.name == "local":
        return t.day_feature_tables(table, day, codes)
    with dask_client(engine) as client:
        return dask_feature_tables(table, day, client, codes=codes)


@contextmanager
def dask_client(engine: FeatureEngine) -> Iterator[object]:
    """A `distributed.Client` of the engine's scheduler, or of a local cluster started for it."""
    from distributed import Client, LocalCluster

    if engine.dask_scheduler:
        with Client(engine.dask_scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=engine.dask_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# -- tasks (run on the workers; module-level so they pickle by reference) ------------------------


def _batches(path: str, group: int, columns: list[str]):
    with pq.ParquetFile(path) as parquet:
        yield from parquet.read_row_group(group, columns=columns).to_batches(max_chunksize=t.BATCH_ROWS)


def _active_task(path: str, group: int, codes: EventCodes) -> tuple[np.ndarray, np.ndarray]:
    return t._active_in(_batches(path, group, t.ACTIVE_COLUMNS), codes)


def _union_task(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    users = np.unique(np.concatenate([p[0] for p in parts])) if parts else np.zeros(0, np.int64)
    items = np.unique(np.concatenate([p[1] for p in parts])) if parts else np.zeros(0, np.int64)
    return users.astype(np.int64), items.astype(np.int64)


def _partial_task(
    path: str, group: int, active: tuple[np.ndarray, np.ndarray], max_length: int, codes: EventCodes, since_us: int
):
    users, items = active
    sequences = t._LastEngagements(users, max_length, codes.impression_code, since_us)
    counts = t._ItemCounts(items, codes)
    for batch in _batches(path, group, t.HISTORY_COLUMNS):
        cols = t._columns(batch, codes)
        sequences.add(cols)
        counts.add(cols)
    sequences._merge()
    return sequences, counts


def _combine_task(*partials):
    return (t._LastEngagements.combine([p[0] for p in partials]), t._ItemCounts.combine([p[1] for p in partials]))


# -- the graph -----------------------------------------------------------------------------------


def row_groups(table: EventTable, days: list[date]) -> list[tuple[str, int]]:
    """(file, row group) of the given days in row order (days in order, each in file order). The
    paths are resolved to the day's current commit, so every task reads the same commit."""
    parts = []
    for day in days:
        path = table.day_files(day).events
        with pq.ParquetFile(path) as parquet:
            parts += [(str(path), g) for g in range(parquet.metadata.num_row_groups)]
    return parts


def _tree(client, function, futures: list):
    """Merge `futures` in order, FAN_IN at a time, until one is left."""
    while len(futures) > 1:
        futures = [
            client.submit(function, *futures[i : i + FAN_IN], pure=False) for i in range(0, len(futures), FAN_IN)
        ]
    return futures[0]


def dask_feature_tables(
    table: EventTable, day: date, client, max_length: int = t.SEQUENCE_LENGTH, codes: EventCodes = BUILTIN_CODES
) -> dict[str, pd.DataFrame]:
    """`tables.day_feature_tables` as tasks on `client`'s cluster: the day's active ids, then one
    task per row group up to `day`, merged by a tree of tasks; only the root comes back."""
    days = [d for d in table.days() if d <= day]
    if day not in days:
        raise FileNotFoundError(f"no events ingested for {day} (expected {table.events_path(day)})")
    today = [client.submit(_active_task, path, group, codes, pure=False) for path, group in row_groups(table, [day])]
    active = _tree(client, _union_task, today) if len(today) > 1 else client.submit(_union_task, *today, pure=False)
    users, items = active.result()
    since_us = t.shown_since_us(day)
    if len(users) == 0 and len(items) == 0:
        return t.feature_tables_of(
            t._LastEngagements(users, max_length, codes.impression_code, since_us), t._ItemCounts(items, codes)
        )
    partials = [
        client.submit(_partial_task, path, group, active, max_length, codes, since_us, pure=False)
        for path, group in row_groups(table, days)
    ]
    root = _tree(client, _combine_task, partials) if len(partials) > 1 else partials[0]
    sequences, counts = root.result()
    return t.feature_tables_of(sequences, counts)
