"""A day ingested in chunks and features streamed in batches: same rows, same tables, bounded memory."""

import dataclasses

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import feature_pipeline.tables as feature_tables
from events.day_ingest import ingest_day
from events.ingest import validate_events
from events.table import EventTable, file_sha256
from feature_pipeline.tables import day_feature_tables, user_sequence_table
from tests.helpers import SMALL_WORLD
from world.simulator import SimulatedWorld

CHUNKED_WORLD = dataclasses.replace(SMALL_WORLD, chunk_size=700)  # 3000 events a day: 5 chunks
DAY = CHUNKED_WORLD.start_date


def _ingest_chunked(root, world: SimulatedWorld) -> EventTable:
    table = EventTable(root)
    for day in world.days():
        ingest_day(table, day, world.iter_day(day))
    return table


def _ingest_whole(root, world: SimulatedWorld) -> EventTable:
    table = EventTable(root)
    for day in world.days():
        result = validate_events(world.day(day), day)
        table.write_day(day, result.good, result.quarantine)
    return table


def _sorted_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)


def test_a_day_ingested_in_chunks_keeps_every_row_with_one_row_group_per_chunk(tmp_path):
    world = SimulatedWorld(CHUNKED_WORLD)
    table = EventTable(tmp_path)
    summary = ingest_day(table, DAY, world.iter_day(DAY))
    assert (summary.chunks, summary.input_rows, summary.good_rows, summary.quarantined_rows) == (5, 3000, 3000, 0)
    assert pq.ParquetFile(table.events_path(DAY)).metadata.num_row_groups == 5
    pd.testing.assert_frame_equal(_sorted_rows(table.read_day(DAY)), _sorted_rows(world.day(DAY)))


def test_quarantined_rows_of_later_chunks_count_input_rows_from_the_start_of_the_day(tmp_path):
    chunks = list(SimulatedWorld(CHUNKED_WORLD).iter_day(DAY))
    chunks[2] = chunks[2].astype({"surface": object})
    chunks[2].loc[5, "surface"] = "email"
    table = EventTable(tmp_path)
    summary = ingest_day(table, DAY, chunks)
    quarantine = table.read_quarantine(DAY)
    assert quarantine["input_row"].tolist() == [2 * 700 + 5]
    [reason] = quarantine["reason"].tolist()
    assert reason.startswith("surface: isin")
    assert (summary.good_rows, summary.quarantined_rows, summary.reason_counts()) == (2999, 1, {reason: 1})
    assert table.row_count(table.events_path(DAY)) == 2999


def test_a_failure_in_the_middle_of_a_day_leaves_the_ingested_day_as_it_was(tmp_path):
    world = SimulatedWorld(CHUNKED_WORLD)
    table = EventTable(tmp_path)
    ingest_day(table, DAY, world.iter_day(DAY))
    before = {p: file_sha256(p) for p in (table.events_path(DAY), table.quarantine_path(DAY))}

    def failing_source():
        chunks = world.iter_day(DAY)
        yield next(chunks)
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        ingest_day(table, DAY, failing_source())
    assert {p: file_sha256(p) for p in before} == before
    assert sorted(p.name for p in table.events_path(DAY).parent.iterdir()) == ["events.parquet"]


def test_features_of_a_day_ingested_in_chunks_equal_those_of_the_whole_day(tmp_path):
    world = SimulatedWorld(CHUNKED_WORLD)
    chunked = _ingest_chunked(tmp_path / "chunked", world)
    whole = _ingest_whole(tmp_path / "whole", world)
    last = world.days()[-1]
    got, want = day_feature_tables(chunked, last), day_feature_tables(whole, last)
    for view in want:
        pd.testing.assert_frame_equal(got[view], want[view])


def test_feature_tables_streamed_in_small_batches_equal_one_batch(tmp_path, monkeypatch):
    table = _ingest_chunked(tmp_path, SimulatedWorld(CHUNKED_WORLD))
    last = table.days()[-1]
    one_batch = day_feature_tables(table, last)
    short = user_sequence_table(table, last, max_length=7)
    monkeypatch.setattr(feature_tables, "BATCH_ROWS", 250)  # 48 batches, many bounded merges
    streamed = day_feature_tables(table, last)
    for view in one_batch:
        pd.testing.assert_frame_equal(streamed[view], one_batch[view])
    pd.testing.assert_frame_equal(user_sequence_table(table, last, max_length=7), short)
    assert short["seq_length"].max() == 7


def test_an_event_delivered_again_in_a_later_chunk_is_quarantined_as_in_the_whole_day(tmp_path):
    """Duplicates across chunks: the chunked day quarantines exactly the rows (input row, reason,
    original values) that validating the whole day at once does, and keeps the same good rows."""
    chunks = list(SimulatedWorld(CHUNKED_WORLD).iter_day(DAY))
    chunks[3] = pd.concat(
        [chunks[3], chunks[0].iloc[[4, 9]], chunks[3].iloc[[1]], chunks[1].iloc[[0]]], ignore_index=True
    )  # two from chunk 0, one within chunk 3, one from chunk 1
    chunks[4] = pd.concat([chunks[0].iloc[[4]], chunks[4]], ignore_index=True)  # a third copy
    chunks[2] = chunks[2].astype({"surface": object})
    chunks[2].loc[5, "surface"] = "email"  # a bad row that is no duplicate
    whole = validate_events(pd.concat(chunks, ignore_index=True), DAY)
    assert len(whole.quarantine) == 6

    table = EventTable(tmp_path)
    summary = ingest_day(table, DAY, chunks)
    quarantine = table.read_quarantine(DAY)
    pd.testing.assert_frame_equal(quarantine, whole.quarantine)
    pd.testing.assert_frame_equal(_sorted_rows(table.read_day(DAY)), _sorted_rows(whole.good))
    assert (summary.input_rows, summary.good_rows, summary.quarantined_rows) == (3005, 2999, 6)
    assert summary.duplicates_across_chunks == 4
    assert summary.reason_counts()["duplicate: same event as an earlier row"] == 5
    assert pq.ParquetFile(table.events_path(DAY)).metadata.num_row_groups == 5


def test_events_equal_in_hash_only_are_not_duplicates(tmp_path, monkeypatch):
    """Rows that share a key hash but differ are both kept (the keys are compared exactly)."""
    import events.ingest as ingest

    monkeypatch.setattr(ingest, "key_hashes", lambda keys: np.zeros(len(keys["user_id"]), np.uint64))
    chunks = list(SimulatedWorld(CHUNKED_WORLD).iter_day(DAY))
    table = EventTable(tmp_path)
    summary = ingest_day(table, DAY, chunks)
    assert (summary.good_rows, summary.quarantined_rows) == (3000, 0)
