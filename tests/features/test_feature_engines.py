"""The feature tables on Dask (feature_pipeline.engines): one task per row group of the event
table on a local `dask.distributed` cluster of two worker processes, merged by a tree of tasks,
give the single-process tables byte for byte once written. Selected by configuration.

Marked `scale_out` (a local cluster takes seconds to start); scripts/test.sh runs it in CI."""

import dataclasses

import pytest

from assets.config import load_settings
from assets.resources import build_resources
from events.day_ingest import ingest_day
from events.table import EventTable, file_sha256
from feature_pipeline.engines import FeatureEngine, compute_feature_tables, row_groups
from feature_pipeline.store import (
    FeastSettings,
    offline_table_path,
    write_offline_tables,
)
from tests.helpers import SMALL_WORLD
from world.simulator import SimulatedWorld

pytestmark = pytest.mark.scale_out

WORLD = dataclasses.replace(SMALL_WORLD, chunk_size=700)  # 3000 events a day: 5 row groups a day


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    table = EventTable(tmp_path_factory.mktemp("engines") / "lake")
    world = SimulatedWorld(WORLD)
    for day in world.days():
        ingest_day(table, day, world.iter_day(day))
    return table


def _written(tables, folder, day) -> dict[str, str]:
    settings = FeastSettings(folder)
    write_offline_tables(settings, day, tables)
    return {view: file_sha256(offline_table_path(settings, view, day)) for view in tables}


@pytest.mark.parametrize("day_index", [0, 3])
def test_dask_gives_the_single_process_tables_byte_for_byte(table, tmp_path, day_index):
    day = table.days()[day_index]
    assert len(row_groups(table, [d for d in table.days() if d <= day])) == 5 * (day_index + 1)
    local = compute_feature_tables(table, day)
    on_dask = compute_feature_tables(table, day, FeatureEngine("dask", dask_workers=2))
    assert {v: len(df) for v, df in on_dask.items()} == {v: len(df) for v, df in local.items()}
    assert len(local["user_sequence"]) > 0
    assert _written(on_dask, tmp_path / "dask", day) == _written(local, tmp_path / "local", day)


def test_the_engine_is_chosen_by_configuration(tmp_path):
    default = build_resources(load_settings({"PINREC_DATA_DIR": str(tmp_path)}))["lake"]
    assert default.engine() == FeatureEngine("local")
    chosen = build_resources(
        load_settings(
            {
                "PINREC_DATA_DIR": str(tmp_path),
                "PINREC_FEATURE_ENGINE": "dask",
                "PINREC_DASK_SCHEDULER": "tcp://10.0.0.5:8786",
            }
        )
    )["lake"]
    assert chosen.engine() == FeatureEngine("dask", dask_scheduler="tcp://10.0.0.5:8786")
    with pytest.raises(ValueError, match="unknown feature engine"):
        load_settings({"PINREC_FEATURE_ENGINE": "spark"})
