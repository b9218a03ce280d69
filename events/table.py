"""The partitioned event table and its quarantine, as parquet files per day.

    {root}/events/date=YYYY-MM-DD/events.parquet          contract rows
    {root}/quarantine/date=YYYY-MM-DD/quarantine.parquet  input_row, reason, raw

A day is rewritten whole (atomic rename), so re-ingesting a day replaces it: re-runs are
idempotent, and the same input gives byte-identical files.

A day can be written in chunks (`day_writer`): each appended chunk becomes its own row group(s),
sorted by (event_ts, user_id) within the chunk, so memory is bounded by the chunk, not the day.
A day written in one chunk (`write_day`) is therefore sorted as a whole. Readers that stream
(`iter_batches`) see the rows in file order, which is ingestion order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from events.contract import COLUMNS, TIMESTAMP_DTYPE, conform, empty_events
from storage.files import commit_temp, unique_temp_path

_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EventTable:
    def __init__(self, root: Path):
        self.root = Path(root)

    def events_path(self, day: date) -> Path:
        return self.root / "events" / f"date={day.isoformat()}" / "events.parquet"

    def quarantine_path(self, day: date) -> Path:
        return self.root / "quarantine" / f"date={day.isoformat()}" / "quarantine.parquet"

    def write_day(self, day: date, good: pd.DataFrame, quarantine: pd.DataFrame) -> None:
        """Replace the day with `good` (sorted by event_ts, user_id) and its `quarantine`."""
        with self.day_writer(day) as writer:
            writer.append(good, quarantine)

    def day_writer(self, day: date) -> DayWriter:
        """A writer that replaces the day with the chunks appended to it (see `DayWriter`)."""
        return DayWriter(self.events_path(day), self.quarantine_path(day))

    def iter_batches(self, days: Iterable[date], columns: list[str], batch_rows: int = 1_000_000) -> Iterator[pa.RecordBatch]:
        """The rows of the given ingested days (in the order given, each in file order), as
        record batches of at most `batch_rows` rows with only `columns`."""
        for day in days:
            parquet = pq.ParquetFile(self.events_path(day))
            yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)

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
    pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("surface", pa.string()),
               ("outcome", pa.string()), ("event_ts", pa.timestamp("us", tz="UTC")),
               ("session_id", pa.int64()), ("query_id", pa.int64())]),
    empty_events(),
)
QUARANTINE_ARROW_SCHEMA = _schema_with_pandas_metadata(
    pa.schema([("input_row", pa.int64()), ("reason", pa.string()), ("raw", pa.string())]),
    pd.DataFrame({"input_row": pd.Series([], dtype="int64"), "reason": pd.Series([], dtype=object),
                  "raw": pd.Series([], dtype=object)}),
)


class _PartFile:
    """One parquet file written in row groups to a temporary name, renamed into place on commit."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.tmp = unique_temp_path(path)
        self.path, self.schema = path, schema
        self.writer = pq.ParquetWriter(self.tmp, schema, coerce_timestamps="us", allow_truncated_timestamps=False)

    def write(self, df: pd.DataFrame) -> None:
        if len(df):
            self.writer.write_table(pa.Table.from_pandas(df, schema=self.schema, preserve_index=False))

    def close(self, commit: bool) -> None:
        try:
            self.writer.close()
            if commit:
                commit_temp(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)


class DayWriter:
    """Writes one day of the event table chunk by chunk (a context manager).

    Each `append(good, quarantine)` adds one validated chunk: its good rows, sorted by
    (event_ts, user_id), become row group(s) of the day's events file, and its quarantined rows
    are appended with `input_row` shifted by the rows of the chunks before it, so `input_row`
    counts from the start of the day's input. On a clean exit both files replace the day's
    files (atomic renames); on an exception the day is left as it was.
    """

    def __init__(self, events_path: Path, quarantine_path: Path):
        self._events = _PartFile(events_path, EVENTS_ARROW_SCHEMA)
        self._quarantine = _PartFile(quarantine_path, QUARANTINE_ARROW_SCHEMA)
        self.input_rows = 0
        self.good_rows = 0
        self.quarantined_rows = 0

    def append(self, good: pd.DataFrame, quarantine: pd.DataFrame) -> None:
        self._events.write(good.sort_values(["event_ts", "user_id"], kind="stable"))
        self._quarantine.write(quarantine.assign(input_row=quarantine["input_row"] + self.input_rows))
        self.input_rows += len(good) + len(quarantine)
        self.good_rows += len(good)
        self.quarantined_rows += len(quarantine)

    def __enter__(self) -> DayWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        commit = exc_type is None
        self._events.close(commit)
        self._quarantine.close(commit)
