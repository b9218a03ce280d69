"""Validate raw event rows against the contract and split them into good rows and quarantine.

Nothing is dropped: every input row ends up in exactly one of the two outputs, so
``len(good) + len(quarantine) == len(raw)`` always holds. A quarantined row keeps its original
values (as text, since a broken row may not fit the contract's types), its position in the input
and the names of every check it failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pandas as pd
import pandera.errors

from events.contract import (
    COLUMNS,
    EVENT_KEY,
    EVENT_SCHEMA,
    REQUIRED_COLUMNS,
    TIMESTAMP_DTYPE,
    conform,
    empty_events,
)

QUARANTINE_COLUMNS: tuple[str, ...] = ("input_row", "reason", "raw")

_INT_COLUMNS = ("user_id", "item_id", "session_id", "query_id")
_TZ_SUFFIX = re.compile(r"(Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)


class NoEventsError(ValueError):
    """A day with no events: its source has nothing to read, or its input has no rows. That is an
    outage upstream, not an empty day: ingestion stops, and the day's existing files (events,
    quarantine, feature tables) are kept as they were."""

    def __init__(self, day: date | str, detail: str = "") -> None:
        self.day = day
        label = day.isoformat() if isinstance(day, date) else str(day)
        super().__init__(f"no events for day {label}" + (f" ({detail})" if detail else "")
                         + "; the day's existing files were kept")


def bad_row_fraction(good_rows: int, quarantined_rows: int, day: date | str) -> float:
    """Quarantined rows / input rows of a day (or a span of days, named by `day`);
    :class:`NoEventsError` when there were no rows at all (0/0 is an outage, not 0%)."""
    total = int(good_rows) + int(quarantined_rows)
    if total <= 0:
        raise NoEventsError(day, "0 rows ingested and 0 quarantined")
    return int(quarantined_rows) / total


class RowsLostError(RuntimeError):
    """Good + quarantined rows differ from the input rows: ingestion lost (or made up) rows."""


def check_rows_conserved(input_rows: int, good_rows: int, quarantined_rows: int, what: str) -> None:
    """The contract's promise, as a check that survives ``python -O``: every input row is either
    good or quarantined. :class:`RowsLostError` naming ``what`` (a day, a run) otherwise."""
    if int(good_rows) + int(quarantined_rows) != int(input_rows):
        raise RowsLostError(f"{what}: {input_rows} rows in, but {good_rows} good + {quarantined_rows} "
                            f"quarantined = {int(good_rows) + int(quarantined_rows)}: ingestion lost rows")


@dataclass(frozen=True)
class IngestResult:
    good: pd.DataFrame  # contract frame
    quarantine: pd.DataFrame  # columns QUARANTINE_COLUMNS
    input_rows: int

    @property
    def bad_fraction(self) -> float:
        return len(self.quarantine) / self.input_rows if self.input_rows else 0.0

    def reason_counts(self) -> dict[str, int]:
        """How many quarantined rows failed each check (a row can fail several)."""
        counts: dict[str, int] = {}
        for reasons in self.quarantine["reason"]:
            for reason in reasons.split("; "):
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def day_window(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def _add_reason(reasons: list[list[str]], mask: np.ndarray, reason: str) -> None:
    for i in np.flatnonzero(mask):
        reasons[i].append(reason)


def _as_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


_INT64_MAX = np.iinfo(np.int64).max


def _parse_int(value: object) -> tuple[int | None, str | None]:
    """(integer or None, failure reason or None) for one raw value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None, None
    if isinstance(value, (bool, np.bool_)):
        return None, "not an integer"
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None, None
        if not float(value).is_integer():
            return None, "not an integer"
        number = int(value)
    elif isinstance(value, (str, bytes)):
        text = _as_text(value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                return None, "not an integer"
            if not as_float.is_integer():
                return None, "not an integer"
            number = int(as_float)
    else:
        return None, "not an integer"
    if abs(number) > _INT64_MAX:
        return None, "out of range"
    return number, None


def _coerce_int(raw: pd.Series, name: str, reasons: list[list[str]]) -> pd.Series:
    """Coerce to nullable Int64; values that are not whole numbers become NA with a reason."""
    if pd.api.types.is_integer_dtype(raw.dtype):
        return raw.astype("Int64")
    values: list[int | None] = []
    for i, value in enumerate(raw.to_numpy(dtype=object)):
        number, failure = _parse_int(value)
        if failure:
            reasons[i].append(f"{name}: {failure}")
        values.append(number)
    return pd.Series(pd.array(values, dtype="Int64"), index=raw.index)


def _coerce_timestamps(raw: pd.Series, reasons: list[list[str]]) -> pd.Series:
    """Coerce to UTC microseconds; naive or unparseable values become NaT with a reason."""
    dtype = raw.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
    if pd.api.types.is_datetime64_dtype(dtype):
        _add_reason(reasons, raw.notna().to_numpy(), "event_ts: timestamp without timezone")
        return pd.Series(pd.NaT, index=raw.index, dtype=TIMESTAMP_DTYPE)
    out = pd.Series(pd.NaT, index=raw.index, dtype=TIMESTAMP_DTYPE)
    for i, value in enumerate(raw.to_numpy()):
        if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, (pd.Timestamp, datetime)):
            ts = pd.Timestamp(value)
        elif isinstance(value, (str, bytes)):
            text = _as_text(value).strip()
            if not _TZ_SUFFIX.search(text):
                reasons[i].append("event_ts: timestamp without timezone")
                continue
            try:
                ts = pd.Timestamp(text)
            except (ValueError, OverflowError):
                reasons[i].append("event_ts: not a timestamp")
                continue
        else:
            reasons[i].append("event_ts: not a timestamp")
            continue
        if ts.tzinfo is None:
            reasons[i].append("event_ts: timestamp without timezone")
            continue
        try:
            out.iloc[i] = ts.tz_convert("UTC")
        except (OverflowError, pd.errors.OutOfBoundsDatetime):
            reasons[i].append("event_ts: out of range")
    return out


def _coerce_text(raw: pd.Series, name: str, reasons: list[list[str]]) -> pd.Series:
    text = raw.map(lambda v: v if isinstance(v, str) else _as_text(v) if isinstance(v, bytes) else v)
    not_text = text.notna() & ~text.map(lambda v: isinstance(v, str))
    _add_reason(reasons, not_text.to_numpy(), f"{name}: not text")
    return text.where(~not_text, None).astype(object)


def _raw_text(raw: pd.DataFrame) -> pd.Series:
    """Each input row as one JSON-like text, so quarantine keeps whatever arrived."""
    records = raw.to_dict(orient="records")
    return pd.Series(
        [repr({k: _as_text(v) for k, v in rec.items()}) for rec in records], dtype=object
    )


def validate_events(raw: pd.DataFrame, day: date | None = None, vocabulary=None) -> IngestResult:
    """Split `raw` into contract rows and quarantined rows.

    `day`: when given, rows whose event_ts falls outside that UTC day are quarantined
    (a partition only holds its own day). `vocabulary` (`events.vocabulary.Vocabulary`): the
    surfaces and outcomes allowed, a value outside them quarantined with a reason naming its
    file; default: the built-in data's (`events.contract.EVENT_SCHEMA`).
    """
    n = len(raw)
    raw = raw.reset_index(drop=True)
    if n == 0:
        return IngestResult(empty_events(), _quarantine_frame([], [], []), 0)

    reasons: list[list[str]] = [[] for _ in range(n)]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    extra = [c for c in raw.columns if c not in COLUMNS]
    for col in missing:
        _add_reason(reasons, np.ones(n, bool), f"{col}: missing column")
    for col in extra:
        _add_reason(reasons, np.ones(n, bool), f"{col}: unexpected column")

    coerced = pd.DataFrame(index=raw.index)
    for col in COLUMNS:
        if col not in raw.columns:
            coerced[col] = pd.Series(pd.NA, index=raw.index, dtype="Int64" if col in _INT_COLUMNS else object)
        elif col in _INT_COLUMNS:
            coerced[col] = _coerce_int(raw[col], col, reasons)
        elif col == "event_ts":
            coerced[col] = _coerce_timestamps(raw[col], reasons)
        else:
            coerced[col] = _coerce_text(raw[col], col, reasons)

    # The contract's own checks (nulls, ranges, vocabularies, time bounds), one reason per failure.
    # Ids stay nullable Int64 here: as float64, 2^53 + 1 would round to 2^53 and pass the range.
    candidate = coerced.copy()
    contract = EVENT_SCHEMA if vocabulary is None else vocabulary.event_schema()
    schema = contract.update_columns(
        {c: {"dtype": None} for c in ("user_id", "item_id", "session_id", "query_id", "surface", "outcome")}
    )
    try:
        schema.validate(candidate, lazy=True)
    except pandera.errors.SchemaErrors as err:
        cases = err.failure_cases
        for _, case in cases.iterrows():
            idx = case["index"]
            if idx is None or (isinstance(idx, float) and np.isnan(idx)):
                continue
            check = str(case["check"])
            if check == "not_nullable":
                check = "null"
            reason = f"{case['column']}: {check}"
            if reason not in reasons[int(idx)]:
                reasons[int(idx)].append(reason)

    if day is not None:
        start, end = day_window(day)
        ts = coerced["event_ts"]
        outside = ts.notna() & ((ts < pd.Timestamp(start)) | (ts >= pd.Timestamp(end)))
        _add_reason(reasons, outside.to_numpy(), f"event_ts: outside partition {day.isoformat()}")

    ok = np.array([not r for r in reasons])
    # Duplicates among otherwise good rows: the first copy is kept, later copies quarantined.
    dup = np.zeros(n, bool)
    if ok.any():
        key = coerced.loc[ok, list(EVENT_KEY)]
        dup[np.flatnonzero(ok)] = key.duplicated(keep="first").to_numpy()
    _add_reason(reasons, dup, "duplicate: same event as an earlier row")
    ok &= ~dup

    good = conform(coerced.loc[ok]).reset_index(drop=True) if ok.any() else empty_events()
    bad_idx = np.flatnonzero(~ok)
    quarantine = _quarantine_frame(
        bad_idx.tolist(),
        ["; ".join(reasons[i]) for i in bad_idx],
        _raw_text(raw.iloc[bad_idx]).tolist() if len(bad_idx) else [],
    )
    return IngestResult(good, quarantine, n)


def _quarantine_frame(rows: list[int], reasons: list[str], raw: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "input_row": pd.Series(rows, dtype="int64"),
            "reason": pd.Series(reasons, dtype=object),
            "raw": pd.Series(raw, dtype=object),
        }
    )
