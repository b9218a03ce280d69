"""The partitioned event table and its quarantine, as parquet files per day.

    {root}/events/date=YYYY-MM-DD/events.parquet          contract rows
    {root}/quarantine/date=YYYY-MM-DD/quarantine.parquet  input_row, reason, raw

A day is rewritten whole, so re-ingesting a day replaces it: re-runs are idempotent, and the
same input gives byte-identical files.

A day is committed atomically: events and quarantine change together, at one rename. Both files
of a commit are written into one folder of the day's commit directory,

    {root}/.days/date=YYYY-MM-DD/g-<sha256 of both files, 16 hex>/{events,quarantine}.parquet
    {root}/.days/date=YYYY-MM-DD/current -> g-...      the commit point (a symbolic link)

flushed to disk with their folder, and made current by replacing the ``current`` link (one
rename, then the folder flushed). The two paths above are fixed links through ``current``, so
every reader that opens them gets the day of one commit; a reader that needs the *pair* from one
commit resolves it once with :meth:`EventTable.day_files`. A crash before the rename leaves the
old day, after it the new one. Writers of a day take turns (the lock file ``lock`` beside
``current``); the commit before the current one is kept for readers still holding it, older ones
are removed. A day is never committed without input rows (:class:`events.ingest.NoEventsError`:
its files are kept). A day written by the previous layout (two plain files) is read as before and becomes a
committed day
at its next write (that first write replaces the two plain files one after the other).

A day can be written in chunks (`day_writer`): each appended chunk becomes its own row group(s),
sorted by (event_ts, user_id) within the chunk, so memory is bounded by the chunk, not the day.
A day written in one chunk (`write_day`) is therefore sorted as a whole. Readers that stream
(`iter_batches`) see the rows in file order, which is ingestion order.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from events.contract import COLUMNS, TIMESTAMP_DTYPE, conform, empty_events
from events.ingest import NoEventsError
from storage.files import atomic_symlink, commit_dir, exclusive_lock, fsync_path, older_than

_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
EVENTS_FILE = "events.parquet"
QUARANTINE_FILE = "quarantine.parquet"
COMMITS_DIR = ".days"
CURRENT = "current"
_STALE_TMP_S = 3600.0  # a writer's unfinished folder older than this is litter of a crash


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DayFiles:
    """The events and quarantine files of one commit of a day (resolved once: they belong
    together) and the link that made them current (None for a day of the previous layout)."""

    events: Path
    quarantine: Path
    commit_point: Path | None


class EventTable:
    def __init__(self, root: Path):
        self.root = Path(root)

    def events_path(self, day: date) -> Path:
        return self.root / "events" / f"date={day.isoformat()}" / EVENTS_FILE

    def quarantine_path(self, day: date) -> Path:
        return self.root / "quarantine" / f"date={day.isoformat()}" / QUARANTINE_FILE

    def commit_dir(self, day: date) -> Path:
        """The day's commits (one folder each) and its ``current`` link."""
        return self.root / COMMITS_DIR / f"date={day.isoformat()}"

    def day_files(self, day: date) -> DayFiles:
        """The day's events and quarantine files of its current commit, resolved once, so the
        two belong to the same commit even while the day is rewritten."""
        link = self.commit_dir(day) / CURRENT
        try:
            generation = os.readlink(link)
        except (FileNotFoundError, NotADirectoryError):
            return DayFiles(self.events_path(day), self.quarantine_path(day), None)
        folder = link.parent / generation
        return DayFiles(folder / EVENTS_FILE, folder / QUARANTINE_FILE, link)

    def generations(self, day: date) -> list[str]:
        """The commit folders the day holds (the current one, and at most the one before)."""
        base = self.commit_dir(day)
        return sorted(p.name for p in base.iterdir() if p.name.startswith("g-")) if base.is_dir() else []

    def write_day(self, day: date, good: pd.DataFrame, quarantine: pd.DataFrame) -> None:
        """Replace the day with `good` (sorted by event_ts, user_id) and its `quarantine`."""
        with self.day_writer(day) as writer:
            writer.append(good, quarantine)

    def day_writer(self, day: date) -> DayWriter:
        """A writer that replaces the day with the chunks appended to it (see `DayWriter`)."""
        return DayWriter(self, day)

    def _commit(self, day: date, folder: Path) -> None:
        """Make `folder` (holding both files of the day, written and closed) the day's current
        commit: flush it, rename it to its content's name, replace the ``current`` link (the
        commit point), make sure the public paths lead through ``current``, drop old commits."""
        base = self.commit_dir(day)
        digest = hashlib.sha256()
        for name in (EVENTS_FILE, QUARANTINE_FILE):
            digest.update(file_sha256(folder / name).encode())
        generation = f"g-{digest.hexdigest()[:16]}"
        link = base / CURRENT
        with exclusive_lock(base / "lock"):
            if not (base / generation).is_dir():
                commit_dir(folder, base / generation)  # flushes both files and the folder first
            # (an existing folder of that name holds the same bytes, flushed when it was made)
            try:
                before = os.readlink(link)
            except FileNotFoundError:
                before = None
            atomic_symlink(generation, link)  # the commit point
            self._link_public(day)
            for child in base.iterdir():
                stale_tmp = child.name.startswith(".tmp-") and child != folder and older_than(child, _STALE_TMP_S)
                if (child.name.startswith("g-") and child.name not in (generation, before)) or stale_tmp:
                    shutil.rmtree(child, ignore_errors=True)

    def _link_public(self, day: date) -> None:
        """Quarantine first, then events (whose presence lists the day): fixed links through
        the day's ``current`` link. Replaces the plain files of the previous layout."""
        base = self.commit_dir(day)
        for public, name in ((self.quarantine_path(day), QUARANTINE_FILE), (self.events_path(day), EVENTS_FILE)):
            target = os.path.relpath(base / CURRENT / name, public.parent)
            if public.is_symlink() and os.readlink(public) == target:
                continue
            atomic_symlink(target, public)
            fsync_path(public.parent.parent)  # a new date= folder is an entry of its parent

    def iter_batches(
        self, days: Iterable[date], columns: list[str], batch_rows: int = 1_000_000
    ) -> Iterator[pa.RecordBatch]:
        """The rows of the given ingested days (in the order given, each in file order), as
        record batches of at most `batch_rows` rows with only `columns`.

        Row group by row group, each read on its own: `ParquetFile.iter_batches` over a whole
        file keeps reader state that grows with the row groups read (measured: ~12 MB per 10^6
        rows, released only when the file is closed), so memory would follow the day's size."""
        for day in days:
            with pq.ParquetFile(self.events_path(day)) as parquet:
                for group in range(parquet.metadata.num_row_groups):
                    rows = parquet.read_row_group(group, columns=columns)
                    yield from rows.to_batches(max_chunksize=batch_rows)
                    del rows

    @staticmethod
    def row_count(path: Path) -> int:
        """Rows in one day's file, from the parquet footer (0 when the day has no file)."""
        return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0

    def days(self) -> list[date]:
        base = self.root / "events"
        if not base.exists():
            return []
        found = [_DAY_DIR.match(p.name) for p in base.iterdir() if (p / "events.parquet").exists()]
        return sorted(date.fromisoformat(m.group(1)) for m in found if m)

    def read_day(self, day: date) -> pd.DataFrame:
        path = self.events_path(day)
        if not path.exists():
            raise FileNotFoundError(f"no events ingested for {day} (expected {path})")
        return conform(pd.read_parquet(path))

    def read_quarantine(self, day: date) -> pd.DataFrame:
        return pd.read_parquet(self.quarantine_path(day))

    def read_until(self, last_day: date, *, filter_expr=None, columns=None) -> pd.DataFrame:
        """All events of ingested days <= last_day, optionally filtered (a pyarrow expression)."""
        files = [str(self.events_path(d)) for d in self.days() if d <= last_day]
        if not files:
            return empty_events() if columns is None else empty_events()[list(columns)]
        table = ds.dataset(files, format="parquet").to_table(filter=filter_expr, columns=list(columns or COLUMNS))
        df = table.to_pandas()
        if "event_ts" in df:
            df["event_ts"] = df["event_ts"].astype(TIMESTAMP_DTYPE)
        return df


def _schema_with_pandas_metadata(schema: pa.Schema, empty: pd.DataFrame) -> pa.Schema:
    """`schema` plus the pandas metadata that restores dtypes (nullable Int64) on read."""
    return pa.Table.from_pandas(empty, schema=schema, preserve_index=False).schema


EVENTS_ARROW_SCHEMA = _schema_with_pandas_metadata(
    pa.schema(
        [
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("surface", pa.string()),
            ("outcome", pa.string()),
            ("event_ts", pa.timestamp("us", tz="UTC")),
            ("session_id", pa.int64()),
            ("query_id", pa.int64()),
        ]
    ),
    empty_events(),
)
QUARANTINE_ARROW_SCHEMA = _schema_with_pandas_metadata(
    pa.schema([("input_row", pa.int64()), ("reason", pa.string()), ("raw", pa.string())]),
    pd.DataFrame(
        {
            "input_row": pd.Series([], dtype="int64"),
            "reason": pd.Series([], dtype=object),
            "raw": pd.Series([], dtype=object),
        }
    ),
)


class _PartFile:
    """One parquet file written in row groups (inside a commit folder not yet visible)."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.writer = pq.ParquetWriter(path, schema, coerce_timestamps="us", allow_truncated_timestamps=False)
        self.closed = False

    def write(self, df: pd.DataFrame, order: np.ndarray | None = None) -> None:
        """Append `df` (its rows in `order` when given) as one row group."""
        if len(df) == 0:
            return
        if order is None:
            self.write_table(pa.Table.from_pandas(df, schema=self.schema, preserve_index=False))
            return
        arrays = []
        for field in self.schema:  # reorder numpy/pandas arrays (pointers for text), convert once
            column = df[field.name]
            values = column.to_numpy()[order] if isinstance(column.dtype, np.dtype) else column.array.take(order)
            arrays.append(pa.array(values, type=field.type, from_pandas=True))
        self.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table)

    def close(self) -> None:
        if not self.closed:
            self.writer.close()
            self.closed = True

    def rewrite(self, transform) -> None:
        """Replace the (closed) file, row group by row group: `transform(index, table)` gives
        each row group's new rows; it is called once more with (None, None) at the end for rows
        to append. Memory: one row group."""
        source = pq.ParquetFile(self.path)
        replacement = _PartFile(self.path.with_name(self.path.name + ".rewrite"), self.schema)
        try:
            for index in range(source.metadata.num_row_groups):
                replacement.write_table(transform(index, source.read_row_group(index)))
            tail = transform(None, None)
            if tail is not None:
                replacement.write_table(tail)
        finally:
            replacement.close()
            source.close()
        os.replace(replacement.path, self.path)


class DayWriter:
    """Writes one day of the event table chunk by chunk (a context manager).

    Each `append(good, quarantine)` adds one validated chunk: its good rows, sorted by
    (event_ts, user_id), become one row group of the day's events file, and its quarantined rows
    are appended with `input_row` shifted by the rows of the chunks before it, so `input_row`
    counts from the start of the day's input. Both files go into a new folder of the day's
    commit directory; on a clean exit it becomes the day's current commit in one rename (see the
    module docstring); on an exception, or when no input row was appended
    (:class:`events.ingest.NoEventsError`), the day is left as it was.

    Before the commit, rows can still move from the events to the quarantine (duplicates found
    across chunks, `events.day_duplicates`): `seal` closes both files, `read_events` reads rows
    by their position in the events file, `move_to_quarantine` rewrites both files.
    """

    def __init__(self, table: EventTable, day: date):
        self.table, self.day = table, day
        base = table.commit_dir(day)
        base.mkdir(parents=True, exist_ok=True)
        self._folder = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
        try:
            self._events = _PartFile(self._folder / EVENTS_FILE, EVENTS_ARROW_SCHEMA)
            self._quarantine = _PartFile(self._folder / QUARANTINE_FILE, QUARANTINE_ARROW_SCHEMA)
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self.input_rows = 0
        self.good_rows = 0
        self.quarantined_rows = 0

    @property
    def scratch(self) -> Path:
        """A folder for the writer's helpers (removed with the writer's folder)."""
        path = self._folder / "scratch"
        path.mkdir(exist_ok=True)
        return path

    def append(self, good: pd.DataFrame, quarantine: pd.DataFrame) -> np.ndarray:
        """Append one chunk; returns each good row's position in the day's events file."""
        if self._events.closed:
            raise RuntimeError("DayWriter.append after seal()")
        user = good["user_id"].to_numpy(dtype=np.int64)
        micros = good["event_ts"].array.as_unit("us").asi8 if len(good) else np.zeros(0, np.int64)
        order = np.lexsort((user, micros))  # stable: by event_ts, then user_id, then input order
        self._events.write(good, order)
        self._quarantine.write(quarantine.assign(input_row=quarantine["input_row"] + self.input_rows))
        positions = np.empty(len(good), np.int64)
        positions[order] = np.arange(self.good_rows, self.good_rows + len(good))
        self.input_rows += len(good) + len(quarantine)
        self.good_rows += len(good)
        self.quarantined_rows += len(quarantine)
        return positions

    def seal(self) -> None:
        """Close both files (no more `append`); they can still be read and rewritten."""
        self._events.close()
        self._quarantine.close()

    def read_events(self, positions: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """The events at `positions` of the sealed events file (in that order), reading one row
        group at a time."""
        self.seal()
        positions = np.asarray(positions, np.int64)
        source = pq.ParquetFile(self._events.path)
        starts = np.cumsum([0] + [source.metadata.row_group(i).num_rows for i in range(source.metadata.num_row_groups)])
        group = np.searchsorted(starts, positions, side="right") - 1
        parts, where = [], []
        for g in np.unique(group):
            mine = np.flatnonzero(group == g)
            rows = source.read_row_group(int(g), columns=columns).take(pa.array(positions[mine] - starts[g]))
            parts.append(rows)
            where.append(mine)
        source.close()
        if not parts:
            return empty_events() if columns is None else empty_events()[columns]
        frame = pa.concat_tables(parts).to_pandas()
        frame.index = np.concatenate(where)
        return frame.sort_index().reset_index(drop=True)

    def move_to_quarantine(self, positions: np.ndarray, quarantine: pd.DataFrame) -> None:
        """Remove the events at `positions` and add `quarantine` (its `input_row` counted from the
        start of the day, like the file's) to the quarantine, kept in input-row order."""
        self.seal()
        drop = np.sort(np.asarray(positions, np.int64))
        offset = [0]

        def without_dropped(index, table):
            if index is None:
                return None
            start, offset[0] = offset[0], offset[0] + table.num_rows
            mine = drop[(drop >= start) & (drop < offset[0])] - start
            if len(mine) == 0:
                return table
            keep = np.ones(table.num_rows, bool)
            keep[mine] = False
            return table.filter(pa.array(keep))

        self._events.rewrite(without_dropped)
        extra = quarantine.sort_values("input_row", kind="stable")
        extra_table = pa.Table.from_pandas(
            extra[list(QUARANTINE_ARROW_SCHEMA.names)], schema=QUARANTINE_ARROW_SCHEMA, preserve_index=False
        )
        rows = extra["input_row"].to_numpy()
        taken = [0]

        def merged(index, table):
            if index is None:  # what is left goes after the last row group
                return extra_table.slice(taken[0])
            last = table.column("input_row")[-1].as_py() if table.num_rows else -1
            upto = int(np.searchsorted(rows, last, side="right"))
            batch = pa.concat_tables([table, extra_table.slice(taken[0], upto - taken[0])])
            taken[0] = upto
            return batch.take(pc.sort_indices(batch, [("input_row", "ascending")]))

        self._quarantine.rewrite(merged)
        self.good_rows -= len(drop)
        self.quarantined_rows += len(quarantine)

    def __enter__(self) -> DayWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.seal()
            if exc_type is None:
                if self.input_rows == 0:
                    raise NoEventsError(self.day, "the day's input has no rows")
                shutil.rmtree(self._folder / "scratch", ignore_errors=True)
                self.table._commit(self.day, self._folder)
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)  # gone already when it was committed
