"""Ingest one day that arrives in chunks: validate each chunk and append it to the day's files.

Memory is bounded by the chunk, not the day: each chunk goes through `validate_events` and is
appended to the event table's `DayWriter` before the next chunk is read. Every input row still
ends in exactly one of the two outputs, and quarantined rows' `input_row` counts from the start
of the day's input. Duplicates are found within a chunk; a source that can deliver the same
event twice in different chunks must deliver its day as one chunk (`validate_events` on the
whole day).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from events.ingest import validate_events
from events.table import EventTable


@dataclass
class DayIngestSummary:
    """Counts of one day ingested in chunks; the rows themselves are in the event table."""

    input_rows: int = 0
    good_rows: int = 0
    quarantined_rows: int = 0
    chunks: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def bad_fraction(self) -> float:
        return self.quarantined_rows / self.input_rows if self.input_rows else 0.0

    def reason_counts(self) -> dict[str, int]:
        """How many quarantined rows failed each check (a row can fail several)."""
        return dict(self.reasons.most_common())


def ingest_day(table: EventTable, day: date, chunks: Iterable[pd.DataFrame]) -> DayIngestSummary:
    """Validate each raw chunk of `day` and append it to the day's files, which replace the day
    once the last chunk is written (on an error the day is left as it was)."""
    summary = DayIngestSummary()
    with table.day_writer(day) as writer:
        for raw in chunks:
            result = validate_events(raw, day)
            writer.append(result.good, result.quarantine)
            summary.input_rows += result.input_rows
            summary.good_rows += len(result.good)
            summary.quarantined_rows += len(result.quarantine)
            summary.chunks += 1
            summary.reasons.update(result.reason_counts())
    return summary
