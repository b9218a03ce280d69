"""Ingest one day that arrives in chunks: validate each chunk and append it to the day's files.

Memory is bounded by the chunk, not the day: each chunk goes through `validate_events` and is
appended to the event table's `DayWriter` before the next chunk is read. Every input row still
ends in exactly one of the two outputs, and quarantined rows' `input_row` counts from the start
of the day's input. Duplicates are found across the whole day: within a chunk by
`validate_events`, across chunks by `events.day_duplicates.DayDuplicates` (spilled to disk,
checked once the last chunk is written, before the day commits), so a day ingested in chunks
quarantines the same rows as the whole day validated at once. A chunk is written by a second
thread while the next one is read and validated (`write_behind`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from events.day_duplicates import DayDuplicates
from events.ingest import (
    CONTRACT_VALUES,
    DUPLICATE_REASON,
    AllowedValues,
    validate_events,
)
from events.table import EventTable


@dataclass
class DayIngestSummary:
    """Counts of one day ingested in chunks; the rows themselves are in the event table."""

    input_rows: int = 0
    good_rows: int = 0
    quarantined_rows: int = 0
    chunks: int = 0
    duplicates_across_chunks: int = 0
    reasons: Counter = field(default_factory=Counter)
    # CPU seconds of each part, each in its own thread (the writes run beside the next chunk's
    # reading and validation, so their wall seconds overlap)
    validate_cpu_seconds: float = 0.0
    write_cpu_seconds: float = 0.0
    duplicates_cpu_seconds: float = 0.0

    @property
    def bad_fraction(self) -> float:
        return self.quarantined_rows / self.input_rows if self.input_rows else 0.0

    def reason_counts(self) -> dict[str, int]:
        """How many quarantined rows failed each check (a row can fail several)."""
        return dict(self.reasons.most_common())


def ingest_day(
    table: EventTable,
    day: date,
    chunks: Iterable[pd.DataFrame],
    *,
    allowed: AllowedValues = CONTRACT_VALUES,
    write_behind: bool = True,
) -> DayIngestSummary:
    """Validate each raw chunk of `day` and append it to the day's files, which replace the day
    once the last chunk is written and the duplicates across chunks are quarantined (on an
    error the day is left as it was)."""
    summary = DayIngestSummary()
    with table.day_writer(day) as writer, ThreadPoolExecutor(1, thread_name_prefix="day-writer") as behind:
        duplicates = DayDuplicates(writer.scratch, allowed)

        def write(result) -> None:
            started = time.thread_time()
            first_row = writer.input_rows
            positions = writer.append(result.good, result.quarantine)
            is_good = np.ones(result.input_rows, bool)
            is_good[result.quarantine["input_row"].to_numpy()] = False
            duplicates.add(result.good_key_hashes, np.flatnonzero(is_good) + first_row, positions)
            summary.write_cpu_seconds += time.thread_time() - started

        try:
            writing = None
            for raw in chunks:
                started = time.thread_time()
                result = validate_events(raw, day, allowed=allowed)
                summary.validate_cpu_seconds += time.thread_time() - started
                if writing is not None:
                    writing.result()  # chunks are written in order, one at a time
                # Written by the second thread while this one reads and validates the next chunk
                # (Arrow's parquet encoding runs without the GIL): one more chunk in memory.
                writing = behind.submit(write, result) if write_behind else None
                if not write_behind:
                    write(result)
                summary.input_rows += result.input_rows
                summary.good_rows += len(result.good)
                summary.quarantined_rows += len(result.quarantine)
                summary.chunks += 1
                summary.reasons.update(result.reason_counts())
                del result
            if writing is not None:
                writing.result()
            started = time.thread_time()
            moved = duplicates.move_to_quarantine(writer)
            summary.duplicates_cpu_seconds = time.thread_time() - started
        finally:
            duplicates.close()
    summary.duplicates_across_chunks = moved
    summary.good_rows -= moved
    summary.quarantined_rows += moved
    if moved:
        summary.reasons[DUPLICATE_REASON] += moved
    return summary
