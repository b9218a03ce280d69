"""The partitioned event table and its quarantine, as parquet files per day.

    {root}/events/date=YYYY-MM-DD/events.parquet          contract rows
    {root}/quarantine/date=YYYY-MM-DD/quarantine.parquet  input_row, reason, raw

A day is rewritten whole (atomic rename), so re-ingesting a day replaces it: re-runs are
idempotent, and the same input gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from events.contract import COLUMNS, TIMESTAMP_DTYPE, conform, empty_events
from events.sources import write_parquet

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
        good = good.sort_values(["event_ts", "user_id"], kind="stable").reset_index(drop=True)
        write_parquet(good, self.events_path(day))
        write_parquet(quarantine, self.quarantine_path(day))

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
