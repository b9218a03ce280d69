"""Ingestion: every input row is either a contract row or quarantined with the check it failed.

`BAD_INPUT` is the bad-input matrix: one stable id per kind of malformed input, each run through
the path real input takes (an in-memory frame as a source returns it, or a parquet file read by
`events.sources.ParquetSource`), then `events.ingest.validate_events`.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from events.contract import EVENT_SCHEMA
from events.ingest import validate_events
from events.sources import ParquetSource, UnreadableEventFile

DAY = date(2026, 1, 5)
N_GOOD = 6  # good rows beside the bad ones in each case


def _good_row(i: int, day: date = DAY) -> dict:
    return {
        "user_id": 10 + i,
        "item_id": 100 + i,
        "surface": "homefeed",
        "outcome": "click",
        "event_ts": f"{day.isoformat()}T10:{i % 60:02d}:00+00:00",
        "session_id": 7,
        "query_id": None,
    }


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).astype(object)


def _good_rows(day: date = DAY) -> list[dict]:
    return [_good_row(i, day) for i in range(N_GOOD)]


def _typed(rows: list[dict]) -> pd.DataFrame:
    """Rows with the contract's physical types (as a well-behaved upstream writes them)."""
    df = pd.DataFrame(rows).drop(columns=["query_id"])
    df["event_ts"] = pd.to_datetime(df["event_ts"], utc=True).astype("datetime64[us, UTC]")
    return df


def _read_file(tmp_path: Path, table: pa.Table) -> pd.DataFrame:
    """Write `table` as the day's file of a `{date}` parquet source and read the day back."""
    path = tmp_path / f"date={DAY.isoformat()}" / "part.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    return ParquetSource(str(tmp_path / "date={date}" / "part.parquet"), days=[DAY]).read_day(DAY)


# One bad row among good ones: the patch applied to an otherwise good row, the reason it must get.
ROW_PATCHES: dict[str, tuple[dict, str]] = {
    "null-user-id": ({"user_id": None}, "user_id: null"),
    "text-item-id": ({"item_id": "abc"}, "item_id: not an integer"),
    "fractional-item-id": ({"item_id": "1.5"}, "item_id: not an integer"),
    "bool-user-id": ({"user_id": True}, "user_id: not an integer"),
    "negative-user-id": ({"user_id": -3}, "user_id: in_range"),
    "huge-item-id-over-2^53": ({"item_id": 2**53 + 1}, "item_id: in_range"),
    "item-id-over-int64": ({"item_id": "99999999999999999999"}, "item_id: out of range"),
    "unknown-surface": ({"surface": "email"}, "surface: isin"),
    "null-surface": ({"surface": None}, "surface: null"),
    "numeric-surface": ({"surface": 5}, "surface: not text"),
    "non-utf8-bytes-surface": ({"surface": b"home\xfffeed"}, "surface: isin"),
    "unknown-outcome": ({"outcome": "purchase"}, "outcome: isin"),
    "naive-timestamp": ({"event_ts": "2026-01-05T10:00:00"}, "event_ts: timestamp without timezone"),
    "future-timestamp": ({"event_ts": "2999-01-05T10:00:00+00:00"}, "event_ts: not_in_future"),
    "timestamp-before-1970": ({"event_ts": "1969-12-31T23:00:00+00:00"}, "event_ts: greater_than_or_equal_to(1970"),
    "unparseable-timestamp": ({"event_ts": "yesterday+00:00"}, "event_ts: not a timestamp"),
    "timestamp-out-of-range": ({"event_ts": "+275000-01-01T00:00:00+00:00"}, "event_ts: not a timestamp"),
    "timestamp-on-another-day": ({"event_ts": "2026-01-04T23:59:59+00:00"}, "event_ts: outside partition 2026-01-05"),
    "null-session-id": ({"session_id": None}, "session_id: null"),
    "negative-query-id": ({"query_id": -1}, "query_id: in_range"),
}


@dataclass(frozen=True)
class BadInput:
    read: Callable[[Path], pd.DataFrame]  # tmp_path -> the raw input as ingestion receives it
    reason: str | None  # named in every bad row's quarantine reason
    bad_rows: int = 1
    input_rows: int = N_GOOD + 1


def _patched(patch: dict) -> Callable[[Path], pd.DataFrame]:
    return lambda _tmp: _frame(_good_rows() + [{**_good_row(N_GOOD), **patch}])


def _duplicate(_tmp: Path) -> pd.DataFrame:
    return _frame(_good_rows() + [_good_row(0)])


def _missing_column(_tmp: Path) -> pd.DataFrame:
    return _frame(_good_rows()).drop(columns=["outcome"])


def _extra_column(_tmp: Path) -> pd.DataFrame:
    return _frame(_good_rows()).assign(price=1)


def _naive_datetime_column(_tmp: Path) -> pd.DataFrame:
    df = _frame(_good_rows())
    return df.assign(event_ts=pd.to_datetime(df["event_ts"].str.slice(0, 19)))  # tz dropped


def _epoch_int_timestamps(tmp: Path) -> pd.DataFrame:
    df = _typed(_good_rows())
    return _read_file(
        tmp, pa.Table.from_pandas(df.assign(event_ts=df["event_ts"].astype("int64") // 10**6), preserve_index=False)
    )


def _float_ids_with_nan(tmp: Path) -> pd.DataFrame:
    df = _typed(_good_rows() + [_good_row(N_GOOD)])
    df["user_id"] = df["user_id"].astype("float64")
    df.loc[N_GOOD, "user_id"] = np.nan  # a nullable id exported by pandas as float64
    return _read_file(tmp, pa.Table.from_pandas(df, preserve_index=False))


def _non_utf8_binary_column(tmp: Path) -> pd.DataFrame:
    df = _typed(_good_rows() + [_good_row(N_GOOD)])
    table = pa.Table.from_pandas(df, preserve_index=False)
    surfaces = pa.array([s.encode() for s in df["surface"][:-1]] + [b"home\xff\xfefeed"], pa.binary())
    return _read_file(tmp, table.set_column(table.schema.get_field_index("surface"), "surface", surfaces))


def _wrong_day_partition_file(tmp: Path) -> pd.DataFrame:
    return _read_file(tmp, pa.Table.from_pandas(_typed(_good_rows(DAY + timedelta(days=1))), preserve_index=False))


def _empty_parquet_with_schema(tmp: Path) -> pd.DataFrame:
    return _read_file(tmp, pa.Table.from_pandas(_typed(_good_rows()).head(0), preserve_index=False))


def _empty_parquet_without_columns(tmp: Path) -> pd.DataFrame:
    return _read_file(tmp, pa.table({}))


BAD_INPUT: dict[str, BadInput] = {
    **{name: BadInput(_patched(patch), reason) for name, (patch, reason) in ROW_PATCHES.items()},
    "duplicate-row": BadInput(_duplicate, "duplicate: same event as an earlier row"),
    "missing-column": BadInput(_missing_column, "outcome: missing column", N_GOOD, N_GOOD),
    "extra-column": BadInput(_extra_column, "price: unexpected column", N_GOOD, N_GOOD),
    "naive-datetime-column": BadInput(_naive_datetime_column, "event_ts: timestamp without timezone", N_GOOD, N_GOOD),
    "epoch-int-timestamps-parquet": BadInput(_epoch_int_timestamps, "event_ts: not a timestamp", N_GOOD, N_GOOD),
    "float-ids-with-nan-parquet": BadInput(_float_ids_with_nan, "user_id: null"),
    "non-utf8-binary-column-parquet": BadInput(_non_utf8_binary_column, "surface: isin"),
    "partition-file-for-wrong-day": BadInput(
        _wrong_day_partition_file, "event_ts: outside partition 2026-01-05", N_GOOD, N_GOOD
    ),
    "empty-parquet": BadInput(_empty_parquet_with_schema, None, 0, 0),
    "empty-parquet-no-columns": BadInput(_empty_parquet_without_columns, None, 0, 0),
}

# Files that are not readable parquet at all: ingestion stops with an error naming the file and
# leaves the file as it was (nothing of it is lost; fix or replace it, then ingest the day again).
UNREADABLE_FILES: dict[str, Callable[[bytes], bytes]] = {
    "truncated-parquet": lambda good: good[: len(good) // 2],
    "parquet-with-corrupt-footer": lambda good: good[:-12] + b"\x00" * 8 + good[-4:],
    "csv-named-parquet": lambda _good: b"user_id,item_id\n1,2\n",
    "zero-byte-file": lambda _good: b"",
}


def test_the_matrix_covers_at_least_20_kinds_of_bad_input():
    assert len(BAD_INPUT) + len(UNREADABLE_FILES) >= 20
    assert len(BAD_INPUT) + len(UNREADABLE_FILES) == len(set(BAD_INPUT) | set(UNREADABLE_FILES))


@pytest.mark.parametrize("kind", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_quarantined_with_its_reason_and_no_row_is_lost(kind, tmp_path):
    case = BAD_INPUT[kind]
    raw = case.read(tmp_path)
    result = validate_events(raw, DAY)

    assert result.input_rows == len(raw) == case.input_rows
    assert len(result.good) + len(result.quarantine) == case.input_rows
    assert len(result.quarantine) == case.bad_rows
    EVENT_SCHEMA.validate(result.good)
    for reason, raw_text in zip(result.quarantine["reason"], result.quarantine["raw"]):
        assert case.reason in reason, f"{kind}: expected {case.reason!r} in {reason!r}"
        assert raw_text  # the row's original values are kept


@pytest.mark.parametrize("kind", UNREADABLE_FILES, ids=list(UNREADABLE_FILES))
def test_unreadable_file_fails_naming_the_file_and_keeps_it(kind, tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pandas(_typed(_good_rows()), preserve_index=False), good)
    path = tmp_path / "events" / f"date={DAY.isoformat()}" / "part.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(UNREADABLE_FILES[kind](good.read_bytes()))
    before = path.read_bytes()

    source = ParquetSource(str(tmp_path / "events" / "date={date}" / "part.parquet"), days=[DAY])
    with pytest.raises(UnreadableEventFile, match=re.escape(str(path))):
        source.read_day(DAY)
    assert path.read_bytes() == before  # kept as it arrived


def test_typed_frame_round_trips_unchanged():
    df = _frame(_good_rows())
    df["event_ts"] = pd.to_datetime(df["event_ts"], utc=True)
    for col in ("user_id", "item_id", "session_id"):
        df[col] = df[col].astype("int64")
    result = validate_events(df, DAY)
    assert len(result.quarantine) == 0
    assert result.good["user_id"].tolist() == df["user_id"].tolist()
    assert str(result.good["event_ts"].dtype) == "datetime64[us, UTC]"


def test_bad_fraction_and_reason_counts():
    rows = [_good_row(i) for i in range(8)] + [{**_good_row(9), "surface": "x"}, {**_good_row(10), "user_id": -1}]
    result = validate_events(_frame(rows), DAY)
    assert result.bad_fraction == pytest.approx(0.2)
    counts = result.reason_counts()
    assert sorted(counts.values()) == [1, 1]
    assert [r.split("(")[0] for r in sorted(counts)] == ["surface: isin", "user_id: in_range"]


def test_every_bad_row_kind_in_one_text_export_loses_nothing(tmp_path):
    """All row kinds mixed into one all-text parquet file (a loose upstream export), read as one
    file holding many days: rows dated outside the span still reach a partition and are
    quarantined there, each with a reason."""
    rows = [_good_row(i) for i in range(10)]
    rows += [{**_good_row(20 + i), **patch} for i, (patch, _) in enumerate(ROW_PATCHES.values())]
    rows.append(dict(rows[0]))

    def as_text(v):
        if isinstance(v, bytes):
            return v.decode("latin-1")
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    path = tmp_path / "broken.parquet"
    pd.DataFrame(rows, dtype=object).map(as_text).to_parquet(path)
    raw = ParquetSource(str(path), days=[DAY]).read_day(DAY)
    result = validate_events(raw, DAY)
    assert len(result.good) + len(result.quarantine) == len(rows)
    assert len(result.good) == 10
    assert result.quarantine["reason"].str.len().min() > 0
