"""Event sources: real MovieLens from PyPI wheels, parquet from disk or S3, the simulator."""

from datetime import date

import pandas as pd
import pytest

from assets.config import KNOWN_SPANS, REPO_ROOT
from events.contract import EVENT_SCHEMA
from events.ingest import validate_events
from events.sources import (
    MovieLensSource,
    ParquetSource,
    make_source,
    movielens_to_events,
)

CACHE = REPO_ROOT / "var" / "cache"


@pytest.fixture(scope="module")
def ml1m():
    return MovieLensSource("movielens-1m", CACHE)


def test_movielens_1m_is_the_real_dataset(ml1m):
    events = ml1m.events()
    assert len(events) == 1_000_209
    assert events["user_id"].nunique() == 6_040
    assert events["item_id"].nunique() == 3_706
    assert set(events["outcome"]) == {f"rating_{r}" for r in range(1, 6)}
    assert set(events["surface"]) == {"homefeed"}
    EVENT_SCHEMA.validate(events.head(50_000))


@pytest.mark.parametrize("name", sorted(KNOWN_SPANS))
def test_known_spans_match_the_data(name):
    days = MovieLensSource(name, CACHE).days()
    assert (days[0], days[-1]) == KNOWN_SPANS[name]


def test_movielens_day_partition_holds_only_that_day_and_validates(ml1m):
    day = date(2000, 11, 20)
    raw = ml1m.read_day(day)
    result = validate_events(raw, day)
    assert len(raw) > 1000 and len(result.quarantine) == 0


def test_movielens_ties_keep_file_order_and_sessions_split_on_gaps():
    inter = (
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        b"1m_2\tB (1990)\t5\t100\n"
        b"1m_2\tA (1990)\t1\t100\n"  # same second as the row above: file order kept
        b"1m_2\tC (1990)\t3\t50\n"
        b"1m_2\tD (1990)\t4\t100000\n"  # > 30 minutes later: new session
        b"1m_1\tA (1990)\t2\t10\n"
    )
    events, items = movielens_to_events(inter)
    titles = dict(zip(items["item_id"], items["title"]))
    user2 = events[events["user_id"] == 2]
    assert [titles[i] for i in user2["item_id"]] == ["C (1990)", "B (1990)", "A (1990)", "D (1990)"]
    assert user2["outcome"].tolist() == ["rating_3", "rating_5", "rating_1", "rating_4"]
    assert user2["session_id"].nunique() == 2
    assert events["session_id"].nunique() == 3


def _contract_rows(day: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": range(n),
            "item_id": range(100, 100 + n),
            "surface": "search",
            "outcome": "click",
            "event_ts": pd.date_range(f"{day} 08:00", periods=n, freq="min", tz="UTC"),
            "session_id": 1,
            "query_id": 5,
        }
    )


def test_parquet_source_splits_a_single_file_by_day_and_keeps_unreadable_rows(tmp_path):
    df = pd.concat([_contract_rows("2026-03-01", 3), _contract_rows("2026-03-02", 2)]).astype({"event_ts": object})
    df.loc[len(df)] = [9, 9, "search", "click", "not a time", 1, 5]
    path = tmp_path / "events.parquet"
    df.astype({"event_ts": str}).to_parquet(path)
    source = ParquetSource(str(path))
    assert source.days() == [date(2026, 3, 1), date(2026, 3, 2)]
    first, second = (source.read_day(d) for d in source.days())
    assert len(first) + len(second) == len(df)  # the unreadable row goes to the first day
    assert len(validate_events(first, date(2026, 3, 1)).quarantine) == 1


def test_parquet_source_reads_day_files_from_s3(s3_server):
    from storage.s3 import make_client, put_bytes

    client = make_client(s3_server.settings())
    for day, n in (("2026-03-01", 4), ("2026-03-02", 6)):
        put_bytes(client, s3_server.bucket, f"incoming/date={day}/part.parquet", _contract_rows(day, n).to_parquet())
    source = ParquetSource(
        f"s3://{s3_server.bucket}/incoming/date={{date}}/part.parquet",
        days=[date(2026, 3, 1), date(2026, 3, 2)],
        s3_client=client,
    )
    assert source.days() == [date(2026, 3, 1), date(2026, 3, 2)]
    result = validate_events(source.read_day(date(2026, 3, 2)), date(2026, 3, 2))
    assert len(result.good) == 6 and len(result.quarantine) == 0


def test_unknown_source_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown event source 'kafka'"):
        make_source("kafka", cache_dir=CACHE)
