"""The data area in Dagster: one partition, idempotent re-runs, the blocking quarantine check,
schedules that roll forward with time and skip a day the source does not have yet, and a
backfill of a range from the CLI (one run of nightly_refresh per day)."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.config import REPO_ROOT, load_settings
from assets.data.definitions import data_definitions
from assets.resources import EventSourceResource, S3Resource, build_resources
from events.table import EventTable, file_sha256
from orchestration.runs import code_location

DAY = "2026-01-03"  # inside the default source's span (the simulated world's first 14 days)


def _data_assets() -> list:
    """The data area of the default deployment's graph without the serving log: no training."""
    area = data_definitions(load_settings())
    return [a for a in area.assets if dg.AssetKey("serving_log") not in a.keys] + list(area.asset_checks)


SMALL_WORLD = {"sim_users": 80, "sim_items": 400, "sim_events_per_day": 4000}


def _resources(tmp: Path, s3_server, **source_overrides):
    env = {
        **os.environ,
        "PINREC_DATA_DIR": str(tmp),
        "PINREC_CACHE_DIR": str(REPO_ROOT / "var" / "cache"),
        "PINREC_SOURCE": "simulated",
    }
    resources = build_resources(load_settings(env))
    resources["event_source"] = EventSourceResource(
        **{**resources["event_source"].model_dump(), **SMALL_WORLD, **source_overrides}
    )
    resources["s3"] = S3Resource(endpoint_url=s3_server.endpoint_url, bucket=s3_server.bucket)
    return resources


def _materialize(resources, partition=DAY, raise_on_error=True):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            _data_assets(),
            partition_key=partition,
            resources=resources,
            instance=instance,
            raise_on_error=raise_on_error,
        )
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        checks = result.get_asset_check_evaluations()
        return result, materialized, checks


def test_one_partition_runs_ingest_features_and_online_store(tmp_path, s3_env):
    resources = _resources(tmp_path, s3_env)
    result, materialized, checks = _materialize(resources)
    assert result.success
    assert materialized == {
        "events",
        "event_quarantine",
        "user_sequence_features",
        "item_stats_features",
        "item_surface_stats_features",
        "online_features",
    }
    assert [(c.check_name, c.passed) for c in checks] == [("bad_row_fraction", True)]
    events_meta = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == ["events"])
    meta = events_meta.materialization.metadata
    assert meta["rows_in"].value == meta["rows_good"].value + meta["rows_quarantined"].value > 0
    online = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == ["online_features"])
    assert online.materialization.metadata["sample_sequence_length"].value > 0
    # the day is archived to S3
    keys = s3_env.settings()
    from storage.s3 import list_keys, make_client

    archived = list_keys(
        make_client(s3_env.settings()), s3_env.bucket, keys.key("data", "simulated", "events", f"date={DAY}")
    )
    assert archived and archived[0].endswith("events.parquet")


def test_rerunning_a_partition_gives_byte_identical_outputs(tmp_path, s3_env):
    resources = _resources(tmp_path, s3_env)
    _materialize(resources)
    table = EventTable(tmp_path / "lake")
    day = datetime.fromisoformat(DAY).date()
    outputs = [
        table.events_path(day),
        table.quarantine_path(day),
        *sorted((tmp_path / "feast" / "offline").rglob(f"{DAY}.parquet")),
    ]
    before = {p: file_sha256(p) for p in outputs}
    _materialize(resources)
    assert {p: file_sha256(p) for p in outputs} == before


def test_bad_row_check_fails_above_threshold_and_blocks_the_features(tmp_path, s3_env):
    rows = [
        {
            "user_id": 1,
            "item_id": i,
            "surface": "homefeed",
            "outcome": "click",
            "event_ts": pd.Timestamp(f"{DAY} 10:00", tz="UTC") + pd.Timedelta(seconds=i),
            "session_id": 1,
        }
        for i in range(10)
    ]
    rows += [
        {
            "user_id": -1,
            "item_id": 5,
            "surface": "email",
            "outcome": "click",
            "event_ts": pd.Timestamp(f"{DAY} 11:00", tz="UTC"),
            "session_id": 1,
        }
    ] * 5
    path = tmp_path / "incoming.parquet"
    pd.DataFrame(rows).to_parquet(path)
    resources = _resources(tmp_path, s3_env, source="parquet", parquet_location=str(path))
    result, materialized, checks = _materialize(resources, raise_on_error=False)
    assert [(c.check_name, c.passed) for c in checks] == [("bad_row_fraction", False)]
    assert checks[0].metadata["rows_quarantined"].value == 5
    assert "events" in materialized and "event_quarantine" in materialized
    assert "online_features" not in materialized and "user_sequence_features" not in materialized
    quarantine = EventTable(tmp_path / "lake").read_quarantine(datetime.fromisoformat(DAY).date())
    assert len(quarantine) == 5 and quarantine["reason"].str.contains("surface: isin").all()


def _tick(schedule_name: str, when: datetime, resources: dict):
    defs = code_location(load_settings())  # the default deployment's graph
    schedule = defs.resolve_schedule_def(schedule_name)
    context = dg.build_schedule_context(
        scheduled_execution_time=when, resources=resources, repository_def=defs.get_repository_def()
    )
    return schedule.evaluate_tick(context)


def _schedule_resources(tmp_path, s3_server, **source):
    resources = _resources(tmp_path, s3_server, **source)
    return {"event_source": resources["event_source"], "s3": resources["s3"]}


def test_nightly_schedule_requests_consecutive_days_on_consecutive_nights(tmp_path, s3_server):
    resources = _schedule_resources(tmp_path, s3_server)  # the simulated world: 2026-01-01 .. 2026-01-14
    requested = []
    for night in (4, 5, 6):
        tick = _tick("nightly_refresh_schedule", datetime(2026, 1, night, 2, 0, tzinfo=UTC), resources)
        requested += [(r.partition_key, r.run_key) for r in tick.run_requests]
    assert requested == [
        ("2026-01-03", "nightly-2026-01-03"),
        ("2026-01-04", "nightly-2026-01-04"),
        ("2026-01-05", "nightly-2026-01-05"),
    ]


def _incoming_log(tmp_path, s3_server, incoming):
    """Schedule resources on a parquet log of one file per day under `incoming` (read afresh)."""
    return _schedule_resources(
        tmp_path,
        s3_server,
        source="parquet",
        n_days=None,
        parquet_location=str(incoming / "date={date}" / "events.parquet"),
    )


def test_schedule_tick_skips_with_a_reason_when_the_source_lacks_the_day(tmp_path, s3_server):
    resources = _schedule_resources(tmp_path, s3_server)
    tick = _tick("nightly_refresh_schedule", datetime(2026, 11, 30, 2, 0, tzinfo=UTC), resources)
    assert not tick.run_requests
    assert "has not produced 2026-11-29" in tick.skip_message and "2026-01-14" in tick.skip_message
    # a parquet source whose day file has not arrived yet
    incoming = tmp_path / "incoming"
    (incoming / "date=2026-03-01").mkdir(parents=True)
    pd.DataFrame({"user_id": [1]}).to_parquet(incoming / "date=2026-03-01" / "events.parquet")
    parquet = _incoming_log(tmp_path, s3_server, incoming)
    arrived = _tick("nightly_refresh_schedule", datetime(2026, 3, 2, 2, 0, tzinfo=UTC), parquet)
    assert [r.partition_key for r in arrived.run_requests] == ["2026-03-01"]
    missing = _tick("nightly_refresh_schedule", datetime(2026, 3, 3, 2, 0, tzinfo=UTC), parquet)
    assert not missing.run_requests and "day 2026-03-02 has not arrived" in missing.skip_message
    # a later day arrived, 2026-03-02 never did: a gap in the log, said as such
    (incoming / "date=2026-03-03").mkdir(parents=True)
    pd.DataFrame({"user_id": [1]}).to_parquet(incoming / "date=2026-03-03" / "events.parquet")
    parquet = _incoming_log(tmp_path, s3_server, incoming)
    gap = _tick("nightly_refresh_schedule", datetime(2026, 3, 3, 2, 0, tzinfo=UTC), parquet)
    assert not gap.run_requests and "2026-03-02: no events in the log, skipped" in gap.skip_message


def test_weekly_retrain_evaluates_on_a_sunday_without_error(tmp_path, s3_server):
    resources = _schedule_resources(tmp_path, s3_server)
    sunday = datetime(2026, 1, 11, 4, 0, tzinfo=UTC)
    assert sunday.weekday() == 6
    tick = _tick("weekly_retrain_schedule", sunday, resources)
    assert [(r.partition_key, r.run_key) for r in tick.run_requests] == [("2026-01-10", "weekly-2026-01-10")]
    late = _tick("weekly_retrain_schedule", datetime(2026, 11, 29, 4, 0, tzinfo=UTC), resources)
    assert not late.run_requests and "2026-11-28" in late.skip_message


def _cli_env(tmp_path: Path, s3_server) -> dict:
    return {
        **os.environ,
        **s3_server.env(),
        "PINREC_SOURCE": "movielens-100k",
        "PINREC_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "PYTHONPATH": str(REPO_ROOT),
    }


def test_backfill_from_the_cli_runs_nightly_refresh_once_per_day_with_each_days_figures(tmp_path, s3_server):
    env = _cli_env(tmp_path, s3_server)
    base = [sys.executable, "-m", "orchestration.cli", "backfill", "--data-only"]
    proc = subprocess.run(
        base + ["--from", "1997-09-20", "--to", "1997-09-23"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = EventTable(tmp_path / "data" / "lake")
    assert [d.isoformat() for d in table.days()] == ["1997-09-20", "1997-09-21", "1997-09-22", "1997-09-23"]
    day = table.days()[1]
    before = file_sha256(table.events_path(day))
    proc = subprocess.run(
        base + ["--from", day.isoformat(), "--to", day.isoformat()],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert file_sha256(table.events_path(day)) == before
    # runs of the nightly_refresh job, one per day, as the UI lists them; each day its own figures
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert [(r.job_name, r.tags["dagster/partition"]) for r in reversed(runs)] == [
            ("nightly_refresh", d.isoformat()) for d in table.days()
        ] + [("nightly_refresh", day.isoformat())]
        for d in table.days():
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("events"), asset_partitions=[d.isoformat()]), limit=1
            ).records
            assert record.asset_materialization.metadata["rows_good"].value == table.row_count(table.events_path(d))


@pytest.mark.slow
def test_definitions_validate_from_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "All code locations passed validation" in proc.stderr + proc.stdout
