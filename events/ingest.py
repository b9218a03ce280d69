"""Validate raw event rows against the contract and split them into good rows and quarantine.

Nothing is dropped: every input row ends up in exactly one of the two outputs, so
``len(good) + len(quarantine) == len(raw)`` always holds. A quarantined row keeps its original
values (as text, since a broken row may not fit the contract's types), its position in the input
and the names of every check it failed.

Validation works on whole columns (see `validate_events`): the cost of a clean input is a few
passes of numpy, pandas and Arrow over each column, with no Python per row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pandera.pandas as pa

from events.coerce import as_text, coerce_int, coerce_text, coerce_timestamps
from events.contract import (
    COLUMNS,
    EVENT_KEY,
    OUTCOMES,
    REQUIRED_COLUMNS,
    SURFACES,
    TIMESTAMP_DTYPE,
    empty_events,
    event_schema,
)

QUARANTINE_COLUMNS: tuple[str, ...] = ("input_row", "reason", "raw")
DUPLICATE_REASON = "duplicate: same event as an earlier row"

_INT_COLUMNS = ("user_id", "item_id", "session_id", "query_id")


class NoEventsError(ValueError):
    """A day with no events: its source has nothing to read, or its input has no rows. That is an
    outage upstream, not an empty day: ingestion stops, and the day's existing files (events,
    quarantine, feature tables) are kept as they were."""

    def __init__(self, day: date | str, detail: str = "") -> None:
        self.day = day
        label = day.isoformat() if isinstance(day, date) else str(day)
        super().__init__(
            f"no events for day {label}" + (f" ({detail})" if detail else "") + "; the day's existing files were kept"
        )


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
        raise RowsLostError(
            f"{what}: {input_rows} rows in, but {good_rows} good + {quarantined_rows} "
            f"quarantined = {int(good_rows) + int(quarantined_rows)}: ingestion lost rows"
        )


@dataclass(frozen=True)
class IngestResult:
    good: pd.DataFrame  # contract frame
    quarantine: pd.DataFrame  # columns QUARANTINE_COLUMNS
    input_rows: int
    # 64-bit hashes of the good rows' EVENT_KEY (`key_hashes`), for duplicates across chunks
    good_key_hashes: np.ndarray | None = None

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
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _raw_text(raw: pd.DataFrame) -> pd.Series:
    """Each input row as one JSON-like text, so quarantine keeps whatever arrived (bad rows only)."""
    records = raw.to_dict(orient="records")
    return pd.Series([repr({k: as_text(v) for k, v in rec.items()}) for rec in records], dtype=object)


@dataclass(frozen=True)
class AllowedValues:
    """The vocabularies a row's `surface` and `outcome` must come from. A parameter of
    ingestion (default: the contract's `SURFACES` and `OUTCOMES`), so another vocabulary is one
    argument: ``validate_events(raw, day, allowed=AllowedValues(surfaces=..., outcomes=...))``.
    The quarantine reason names the allowed values (``surface: isin(('homefeed', ...))``)."""

    surfaces: tuple[str, ...] = SURFACES
    outcomes: tuple[str, ...] = OUTCOMES
    vocabulary_file: str | None = None  # named in the reason of a value outside them

    def __post_init__(self) -> None:
        object.__setattr__(self, "surfaces", tuple(self.surfaces))
        object.__setattr__(self, "outcomes", tuple(self.outcomes))

    @classmethod
    def of(cls, vocabulary) -> AllowedValues:
        """The values an `events.vocabulary.Vocabulary` allows (None: the contract's)."""
        if vocabulary is None:
            return CONTRACT_VALUES
        return cls(vocabulary.surfaces, vocabulary.outcomes, vocabulary.label)


CONTRACT_VALUES = AllowedValues()


@functools.lru_cache(maxsize=16)
def _column_checks(allowed: AllowedValues) -> tuple[tuple[str, bool, tuple[pa.Check, ...]], ...]:
    """(column, nullable, checks) of the contract schema in its column order, the vocabulary
    checks (`isin`) taking `allowed`'s values (and naming its file)."""
    schema = event_schema(allowed.surfaces, allowed.outcomes, allowed.vocabulary_file)
    return tuple((name, bool(column.nullable), tuple(column.checks)) for name, column in schema.columns.items())


def _vocabulary_codes(text: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Each value's position in `vocabulary`, -1 for a missing or unknown value (one hash pass)."""
    return pd.Index(vocabulary).get_indexer(text).astype(np.int64)


def _contract_reasons(
    columns: dict[str, pd.Series], codes: dict[str, np.ndarray], allowed: AllowedValues
) -> list[tuple[str, np.ndarray]]:
    """The contract schema's checks on whole columns (nulls, id ranges, vocabularies, time
    bounds): one (reason, mask) per failing check, in schema order, named as pandera names its
    failure cases (``column: null``, ``column: <check>``). The vocabulary checks use the codes;
    the others are the schema's own pandera checks, run on the column's present values."""
    n = len(next(iter(columns.values())))
    found = []
    for name, nullable, checks in _column_checks(allowed):
        column = columns[name]
        if name in codes:
            unknown = codes[name] < 0
            missing = np.zeros(n, bool)
            suspects = np.flatnonzero(unknown)
            missing[suspects] = pd.isna(column.to_numpy()[suspects])
        else:
            missing = column.isna().to_numpy()
        if not nullable and missing.any():
            found.append((f"{name}: null", missing))
        for check in checks:
            if name in codes and check.name == "isin":
                failed = unknown & ~missing
            else:
                present = np.flatnonzero(~missing) if missing.any() else None
                values = column if present is None else column.iloc[present]
                if isinstance(values.dtype, pd.Int64Dtype):
                    values = pd.Series(values.to_numpy(dtype=np.int64), index=values.index)
                if len(values) == 0:
                    continue
                passed = check(values).check_output.to_numpy(dtype=bool)
                failed = np.zeros(n, bool)
                failed[(np.arange(n) if present is None else present)[~passed]] = True
            if failed.any():
                found.append((f"{name}: {check.error or check.name}", failed))
    return found


_KEY_SEED, _KEY_MIX = np.uint64(0x243F6A8885A308D3), np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def key_hashes(keys: dict[str, np.ndarray]) -> np.ndarray:
    """A 64-bit hash (uint64) of each row's `EVENT_KEY`, given as int64 arrays (the text
    columns as vocabulary codes). Equal keys give equal hashes; equal hashes are only
    candidates (compare the keys)."""
    h = np.full(len(keys[EVENT_KEY[0]]), _KEY_SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in EVENT_KEY:
            h = _mix64(h * _KEY_MIX + keys[name].view(np.uint64))
    return h


def event_keys(good: pd.DataFrame, allowed: AllowedValues = CONTRACT_VALUES) -> dict[str, np.ndarray]:
    """A contract frame's `EVENT_KEY` columns as int64 arrays (surface and outcome as codes)."""
    vocabulary = {"surface": allowed.surfaces, "outcome": allowed.outcomes}
    keys = {}
    for name in EVENT_KEY:
        column = good[name]
        if name in vocabulary:
            keys[name] = _vocabulary_codes(column, vocabulary[name])
        elif name == "event_ts":
            keys[name] = column.array.as_unit("us").asi8
        else:
            keys[name] = column.to_numpy(dtype=np.int64)
    return keys


def duplicate_rows(keys: dict[str, np.ndarray], hashes: np.ndarray) -> np.ndarray:
    """Mask of the rows whose key equals an earlier row's (the first copy is not marked). Rows
    sharing a hash (found by one sort) are the only candidates; their keys are compared exactly."""
    dup = np.zeros(len(hashes), bool)
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated) == 0:
        return dup
    candidates = np.flatnonzero(np.isin(hashes, repeated))
    frame = pd.DataFrame({name: keys[name][candidates] for name in EVENT_KEY})
    dup[candidates[frame.duplicated(keep="first").to_numpy()]] = True
    return dup


def validate_events(
    raw: pd.DataFrame, day: date | None = None, vocabulary=None, *, allowed: AllowedValues | None = None
) -> IngestResult:
    """Split `raw` into contract rows and quarantined rows.

    `day`: when given, rows whose event_ts falls outside that UTC day are quarantined
    (a partition only holds its own day). `vocabulary` (`events.vocabulary.Vocabulary`), or
    `allowed` directly: the surfaces and outcomes allowed, a value outside them quarantined with a
    reason naming the vocabulary file; default: the built-in contract's.

    Whole columns at a time (`events.coerce`, then the contract's checks on whole columns);
    Python touches single rows only to parse odd values and to describe the quarantined rows.
    A row's reasons, in order: missing and unexpected columns, failed coercions (column order),
    failed contract checks (schema order), outside the partition; a duplicate is a row without
    other reasons whose key equals an earlier such row's.
    """
    allowed = allowed or AllowedValues.of(vocabulary)
    n = len(raw)
    raw = raw.reset_index(drop=True)
    if n == 0:
        return IngestResult(empty_events(), _quarantine_frame([], [], []), 0, good_key_hashes=np.zeros(0, np.uint64))

    everywhere = np.ones(n, bool)
    found: list[tuple[str, np.ndarray]] = []
    found += [(f"{col}: missing column", everywhere) for col in REQUIRED_COLUMNS if col not in raw.columns]
    found += [(f"{col}: unexpected column", everywhere) for col in raw.columns if col not in COLUMNS]

    columns: dict[str, pd.Series] = {}
    for col in COLUMNS:
        if col not in raw.columns:
            columns[col] = pd.Series(pd.NA, index=raw.index, dtype="Int64" if col in _INT_COLUMNS else object)
            continue
        if col in _INT_COLUMNS:
            columns[col], failed = coerce_int(raw[col], col)
        elif col == "event_ts":
            columns[col], failed = coerce_timestamps(raw[col])
        else:
            columns[col], failed = coerce_text(raw[col], col)
        found += failed.items()
    vocabulary = {"surface": allowed.surfaces, "outcome": allowed.outcomes}
    codes = {name: _vocabulary_codes(columns[name], vocabulary[name]) for name in vocabulary}

    # Ids stay nullable Int64 here: as float64, 2^53 + 1 would round to 2^53 and pass the range.
    found += _contract_reasons(columns, codes, allowed)

    if day is not None:
        start, end = day_window(day)
        ts = columns["event_ts"]
        outside = (ts.notna() & ((ts < pd.Timestamp(start)) | (ts >= pd.Timestamp(end)))).to_numpy()
        if outside.any():
            found.append((f"event_ts: outside partition {day.isoformat()}", outside))

    ok = ~np.logical_or.reduce([mask for _, mask in found]) if found else np.ones(n, bool)
    ints = {name: columns[name].to_numpy(dtype=np.int64, na_value=0) for name in _INT_COLUMNS}
    micros = columns["event_ts"].array.asi8.copy()
    hashes = np.zeros(0, np.uint64)
    # Duplicates among otherwise good rows: the first copy is kept, later copies quarantined.
    if ok.any():
        rows = np.flatnonzero(ok)
        keys = {
            **{k: v[rows] for k, v in ints.items()},
            "event_ts": micros[rows],
            **{k: v[rows] for k, v in codes.items()},
        }
        hashes = key_hashes(keys)
        dup_of_rows = duplicate_rows(keys, hashes)
        if dup_of_rows.any():
            dup = np.zeros(n, bool)
            dup[rows[dup_of_rows]] = True
            found.append((DUPLICATE_REASON, dup))
            ok &= ~dup
            hashes = hashes[~dup_of_rows]

    rows = np.flatnonzero(ok)
    good = _good_frame(ints, columns, codes, vocabulary, rows, everything=len(rows) == n)
    bad = np.flatnonzero(~ok)
    quarantine = _quarantine_frame(
        bad.tolist(), _reason_texts(found, bad), _raw_text(raw.iloc[bad]).tolist() if len(bad) else []
    )
    return IngestResult(good, quarantine, n, good_key_hashes=hashes)


def _good_frame(
    ints: dict[str, np.ndarray],
    columns: dict[str, pd.Series],
    codes: dict[str, np.ndarray],
    vocabulary: dict[str, tuple[str, ...]],
    rows: np.ndarray,
    everything: bool,
) -> pd.DataFrame:
    """The contract frame of the good `rows` (every value present and valid there)."""
    if len(rows) == 0:
        return empty_events()

    def pick(values):
        return values if everything else values[rows]

    query = columns["query_id"]
    return pd.DataFrame(
        copy=False,
        data={  # fresh arrays: no copy, no consolidation
            "user_id": pick(ints["user_id"]),
            "item_id": pick(ints["item_id"]),
            "surface": np.asarray(vocabulary["surface"], dtype=object)[pick(codes["surface"])],
            "outcome": np.asarray(vocabulary["outcome"], dtype=object)[pick(codes["outcome"])],
            "event_ts": pd.Series(pick(columns["event_ts"].array).copy(), dtype=TIMESTAMP_DTYPE),  # not a view of raw
            "session_id": pick(ints["session_id"]),
            "query_id": pd.arrays.IntegerArray(pick(ints["query_id"]), pick(query.isna().to_numpy())),
        },
    )


def _reason_texts(found: list[tuple[str, np.ndarray]], rows: np.ndarray) -> list[str]:
    """Each of `rows`' reasons joined with "; ", in the order found (each reason once)."""
    texts = [[] for _ in rows]
    for reason, mask in found:
        for j in np.flatnonzero(mask[rows]):
            if reason not in texts[j]:
                texts[j].append(reason)
    return ["; ".join(t) for t in texts]


def _quarantine_frame(rows: list[int], reasons: list[str], raw: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "input_row": pd.Series(rows, dtype="int64"),
            "reason": pd.Series(reasons, dtype=object),
            "raw": pd.Series(raw, dtype=object),
        }
    )
