"""An empty day is an outage, not data: a source folder with no files, or a day whose input has
no rows, stops ingestion with "no events for day D" (`events.ingest.NoEventsError`) and the
day's existing files (events, quarantine, feature tables) are kept byte for byte."""

import uuid
from datetime import date

import pandas as pd
import pytest

from events.day_ingest import ingest_day
from events.ingest import NoEventsError, bad_row_fraction, validate_events
from events.sources import ParquetSource
from events.table import EventTable, file_sha256
from feature_pipeline.store import (
    FeastSettings,
    offline_table_path,
    write_offline_tables,
)
from feature_pipeline.tables import day_feature_tables
from tests.helpers import SMALL_WORLD, ingest_world

DAY = SMALL_WORLD.start_date
MESSAGE = f"no events for day {DAY.isoformat()}"


@pytest.fixture
def lake(tmp_path):
    """A small world ingested, the offline feature tables of every day written."""
    table = ingest_world(tmp_path / "lake")
    settings = FeastSettings(tmp_path / "feast")
    for day in table.days():
        write_offline_tables(settings, day, day_feature_tables(table, day))
    return table, settings


def _fingerprint(table: EventTable, settings: FeastSettings, day: date) -> dict[str, str]:
    paths = [table.events_path(day), table.quarantine_path(day)]
    paths += [offline_table_path(settings, view, day) for view in ("user_sequence", "item_stats", "item_surface_stats")]
    return {str(p): file_sha256(p) for p in paths}


def test_an_empty_source_folder_is_no_events_for_the_day(tmp_path, s3_server):
    (tmp_path / f"date={DAY.isoformat()}").mkdir()
    with pytest.raises(NoEventsError, match=MESSAGE):
        ParquetSource(str(tmp_path / "date={date}"), days=[DAY]).read_day(DAY)
    (tmp_path / "all").mkdir()
    with pytest.raises(NoEventsError, match=MESSAGE):
        ParquetSource(str(tmp_path / "all"), days=[DAY]).read_day(DAY)
    from storage.s3 import make_client

    empty_prefix = f"s3://{s3_server.bucket}/empty-{uuid.uuid4().hex[:8]}/date={{date}}/"
    with pytest.raises(NoEventsError, match=MESSAGE):
        ParquetSource(empty_prefix, days=[DAY], s3_client=make_client(s3_server.settings())).read_day(DAY)


@pytest.mark.parametrize("how", ["write_day", "no-chunks", "empty-chunks"])
def test_a_day_without_rows_is_refused_and_its_files_are_kept(lake, how):
    table, settings = lake
    before = _fingerprint(table, settings, DAY)
    empty = validate_events(pd.DataFrame(), DAY)
    with pytest.raises(NoEventsError, match=MESSAGE):
        if how == "write_day":
            table.write_day(DAY, empty.good, empty.quarantine)
        else:
            ingest_day(table, DAY, [] if how == "no-chunks" else [pd.DataFrame(), pd.DataFrame()])
    assert _fingerprint(table, settings, DAY) == before
    assert DAY in table.days() and len(table.read_day(DAY)) > 0


def test_feature_tables_of_a_day_are_never_all_deleted(lake, tmp_path):
    """The next step would have written the day's feature tables from nothing: every view empty
    means no events, and the existing files stay."""
    table, settings = lake
    before = _fingerprint(table, settings, DAY)
    empty = {view: df.head(0) for view, df in day_feature_tables(table, DAY).items()}
    with pytest.raises(NoEventsError, match=MESSAGE):
        write_offline_tables(settings, DAY, empty)
    assert _fingerprint(table, settings, DAY) == before


def test_the_bad_row_fraction_of_an_empty_day_is_an_error_not_zero():
    assert bad_row_fraction(99, 1, "2026-02-01") == pytest.approx(0.01)
    with pytest.raises(NoEventsError, match="no events for day 2026-02-01"):
        bad_row_fraction(0, 0, "2026-02-01")
