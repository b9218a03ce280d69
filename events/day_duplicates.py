"""Events delivered twice in different chunks of one day, found in memory bounded by a bucket.

Within a chunk, `events.ingest.validate_events` quarantines a repeated event. Across chunks,
each chunk's good rows are spilled to disk as small fixed-size records (the 64-bit hash of the
event key, the row's input row in the day, its position in the day's events file) into
`BUCKETS` files chosen by the hash's top bits. Once the day's last chunk is written, each
bucket is read alone and sorted by hash: rows sharing a hash with a row of another chunk are the
only candidates, and their keys are read back from the events file and compared exactly. Of
equal events the one with the smallest input row stays (the first delivered, as within a chunk);
the others move to the quarantine with the same reason as a duplicate within a chunk.

Memory: one bucket (24 bytes per row of the day / `BUCKETS`: 9.4 MB at 10^8 events) plus the
candidates (the duplicates themselves). Disk: 24 bytes per good row, removed with the writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from events.coerce import as_text
from events.ingest import (
    CONTRACT_VALUES,
    DUPLICATE_REASON,
    AllowedValues,
    duplicate_rows,
    event_keys,
)
from events.table import DayWriter

BUCKETS = 256
RECORD = np.dtype([("hash", "<u8"), ("input_row", "<i8"), ("file_row", "<i8")])
_SHIFT = np.uint64(64 - 8)  # top 8 bits: 256 buckets (uint8)


class DayDuplicates:
    """Collects the good rows of a day's chunks and finds the events repeated across them."""

    def __init__(self, folder: Path, allowed: AllowedValues = CONTRACT_VALUES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.allowed = allowed
        self._files = [open(self.folder / f"bucket-{b:03d}.bin", "wb") for b in range(BUCKETS)]  # noqa: SIM115
        self.rows = 0

    def add(self, hashes: np.ndarray, input_rows: np.ndarray, file_rows: np.ndarray) -> None:
        """One chunk's good rows: their key hashes, input rows (from the start of the day) and
        positions in the events file."""
        if len(input_rows) == 0:
            return
        bucket = (hashes >> _SHIFT).astype(np.uint8)
        order = np.argsort(bucket, kind="stable")  # a one-pass radix sort on uint8
        bounds = np.searchsorted(bucket[order], np.arange(BUCKETS + 1))
        records = np.empty(len(hashes), RECORD)  # filled in bucket order
        records["hash"], records["input_row"], records["file_row"] = hashes[order], input_rows[order], file_rows[order]
        for b in np.flatnonzero(np.diff(bounds)):
            records[bounds[b] : bounds[b + 1]].tofile(self._files[b])
        self.rows += len(hashes)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def candidates(self) -> np.ndarray:
        """Records whose hash another record shares (one bucket in memory at a time)."""
        self.close()
        found = []
        for b in range(BUCKETS):
            records = np.fromfile(self.folder / f"bucket-{b:03d}.bin", RECORD)
            if len(records) < 2:
                continue
            hashes = np.sort(records["hash"])
            repeated = hashes[1:][hashes[1:] == hashes[:-1]]
            if len(repeated):
                found.append(records[np.isin(records["hash"], repeated)])
        return np.concatenate(found) if found else np.zeros(0, RECORD)

    def move_to_quarantine(self, writer: DayWriter) -> int:
        """Find the repeated events and move all but the first delivered of each from the
        writer's events to its quarantine; returns how many moved."""
        candidates = self.candidates()
        if len(candidates) == 0:
            return 0
        candidates = candidates[np.argsort(candidates["input_row"], kind="stable")]
        rows = writer.read_events(candidates["file_row"])
        dup = duplicate_rows(event_keys(rows, self.allowed), candidates["hash"])
        if not dup.any():
            return 0  # hash collisions of different events
        moved = rows[dup]
        raw = [repr({k: as_text(v) for k, v in rec.items()}) for rec in moved.to_dict(orient="records")]
        quarantine = pd.DataFrame(
            {
                "input_row": candidates["input_row"][dup].astype(np.int64),
                "reason": [DUPLICATE_REASON] * len(moved),
                "raw": raw,
            }
        )
        writer.move_to_quarantine(candidates["file_row"][dup], quarantine)
        return int(dup.sum())
