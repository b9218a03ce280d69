"""Ingestion: every input row is either a contract row or quarantined with the check it failed."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from events.contract import EVENT_SCHEMA
from events.ingest import validate_events

DAY = date(2026, 1, 5)


def _good_row(i: int) -> dict:
    return {
        "user_id": 10 + i,
        "item_id": 100 + i,
        "surface": "homefeed",
        "outcome": "click",
        "event_ts": f"2026-01-05T10:{i % 60:02d}:00+00:00",
        "session_id": 7,
        "query_id": None,
    }


BROKEN = {
    "null user_id": ({"user_id": None}, "user_id: null"),
    "text item_id": ({"item_id": "abc"}, "item_id: not an integer"),
    "float item_id": ({"item_id": "1.5"}, "item_id: not an integer"),
    "negative user_id": ({"user_id": -3}, "user_id: in_range"),
    "huge item_id": ({"item_id": 2**60}, "item_id: in_range"),
    "unknown surface": ({"surface": "email"}, "surface: isin"),
    "null surface": ({"surface": None}, "surface: null"),
    "unknown outcome": ({"outcome": "purchase"}, "outcome: isin"),
    "naive timestamp": ({"event_ts": "2026-01-05T10:00:00"}, "event_ts: timestamp without timezone"),
    "future timestamp": ({"event_ts": "2999-01-05T10:00:00+00:00"}, "event_ts: not_in_future"),
    "unparseable timestamp": ({"event_ts": "yesterday+00:00"}, "event_ts: not a timestamp"),
    "timestamp on another day": ({"event_ts": "2026-01-04T23:59:59+00:00"}, "event_ts: outside partition 2026-01-05"),
    "null session": ({"session_id": None}, "session_id: null"),
    "negative query_id": ({"query_id": -1}, "query_id: in_range"),
    "non-utf8 bytes surface": ({"surface": b"home\xfffeed"}, "surface: isin"),
}


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).astype(object)


def test_every_broken_kind_is_quarantined_with_its_reason_and_no_row_is_lost():
    rows = [_good_row(i) for i in range(20)]
    expected = {}
    for name, (patch, reason) in BROKEN.items():
        row = {**_good_row(len(rows)), **patch}
        expected[len(rows)] = (name, reason)
        rows.append(row)
    rows.append(dict(rows[0]))  # an exact duplicate of the first row
    dup_at = len(rows) - 1

    result = validate_events(_frame(rows), DAY)

    assert len(result.good) + len(result.quarantine) == len(rows)
    assert len(result.good) == 20
    EVENT_SCHEMA.validate(result.good)
    by_row = dict(zip(result.quarantine["input_row"], result.quarantine["reason"]))
    for row, (name, reason) in expected.items():
        assert row in by_row, f"{name} was not quarantined"
        assert reason in by_row[row], f"{name}: expected reason {reason!r}, got {by_row[row]!r}"
    assert "duplicate" in by_row[dup_at]
    assert all(result.quarantine["raw"].str.len() > 0)


def test_missing_column_quarantines_every_row_with_the_column_named():
    rows = [_good_row(i) for i in range(5)]
    df = _frame(rows).drop(columns=["outcome"])
    result = validate_events(df, DAY)
    assert len(result.good) == 0
    assert len(result.quarantine) == 5
    assert all("outcome: missing column" in r for r in result.quarantine["reason"])


def test_extra_column_is_rejected_not_silently_dropped():
    df = _frame([_good_row(i) for i in range(3)])
    df["price"] = 1
    result = validate_events(df, DAY)
    assert len(result.quarantine) == 3
    assert all("price: unexpected column" in r for r in result.quarantine["reason"])


def test_empty_input_gives_empty_outputs():
    result = validate_events(pd.DataFrame(), DAY)
    assert result.input_rows == 0 and len(result.good) == 0 and len(result.quarantine) == 0
    assert result.bad_fraction == 0.0


def test_naive_datetime_column_is_quarantined_whole():
    df = _frame([_good_row(i) for i in range(4)])
    df["event_ts"] = pd.to_datetime(df["event_ts"].str.slice(0, 19))  # tz dropped
    result = validate_events(df, DAY)
    assert len(result.quarantine) == 4
    assert all("without timezone" in r for r in result.quarantine["reason"])


def test_typed_frame_round_trips_unchanged():
    df = _frame([_good_row(i) for i in range(6)])
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


def test_broken_rows_file_read_from_parquet_loses_nothing(tmp_path):
    from events.sources import ParquetSource

    rows = [_good_row(i) for i in range(10)]
    rows += [{**_good_row(20 + i), **patch} for i, (patch, _) in enumerate(BROKEN.values())]
    rows.append(dict(rows[0]))
    def as_text(v):
        if isinstance(v, bytes):
            return v.decode("latin-1")
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    frame = pd.DataFrame(rows, dtype=object).map(as_text)
    path = tmp_path / "broken.parquet"
    frame.to_parquet(path)  # every column as text, as a loose upstream export would be
    # rows dated outside the partition span still reach a partition, where they are quarantined
    raw = ParquetSource(str(path), days=[DAY]).read_day(DAY)
    result = validate_events(raw, DAY)
    assert len(result.good) + len(result.quarantine) == len(rows)
    assert len(result.good) == 10
    assert result.quarantine["reason"].str.len().min() > 0

    empty = tmp_path / "empty.parquet"
    _frame(rows).head(0).astype(str).to_parquet(empty)
    assert validate_events(ParquetSource(str(empty), days=[DAY]).read_day(DAY), DAY).input_rows == 0
