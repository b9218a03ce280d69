"""The closed-loop runner under the soak's faults (`benchmarks/chaos.py` injects them into a long
run; these are the focused checks), on a tiny world in warm-up days (data assets only), with its
own SeaweedFS so that stopping it disturbs no other test:

* the S3 server stopped while a day's nightly run needs it: the run fails for an error, the
  runner runs it again (a re-execution of the first, tagged so) once S3 is back, and the day
  completes;
* a runner that stopped after a day's world stage resumes at its next stage (the world is not
  played again), and a day's events file truncated after the world wrote it is fetched again
  from the world (replayed from the serving log: the same bytes), so no event is lost.
"""

import json
import os
import threading
import uuid
from datetime import date

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.config import load_settings
from assets.resources import S3Resource, build_resources
from devstack.processes import wait_until
from devstack.seaweedfs import SeaweedFS
from events.table import EventTable
from orchestration.live import DayReport, LiveRunner
from orchestration.runs import dagster_home

pytestmark = pytest.mark.services  # starts processes of its own

DAY1, DAY2 = date(2026, 1, 1), date(2026, 1, 2)


@pytest.fixture  # one world per test: each plays its own days, in any order (pytest-randomly)
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live-faults")
    server = SeaweedFS(tmp / "seaweedfs").start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PINREC_", "AWS_"))},
        **server.env(),
        "PINREC_SOURCE": "simulated",
        "PINREC_SIM_CLOSED_LOOP": "1",
        "PINREC_ONLINE_CANARY": "1",
        "PINREC_SIM_USERS": "80",
        "PINREC_SIM_ITEMS": "300",
        "PINREC_SIM_EVENTS_PER_DAY": "3000",
        "PINREC_SIM_DAYS": "366",
        "PINREC_DATA_DIR": str(tmp / "live"),
        "PINREC_VAR_DIR": str(tmp / "var"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)  # S3 credentials reach boto3 from the environment only
        settings = load_settings(env)
        resources = build_resources(settings)
        resources["s3"] = S3Resource(
            endpoint_url=server.endpoint_url, bucket=server.bucket, prefix=f"live-faults-{uuid.uuid4().hex[:8]}"
        )
        with dg.DagsterInstance.from_config(str(dagster_home(tmp / "dagster_home"))) as instance:
            messages: list[str] = []

            def runner() -> LiveRunner:  # all days warm-up: the data assets of nightly_refresh
                return LiveRunner(
                    settings=settings,
                    instance=instance,
                    resources=resources,
                    warmup_days=5,
                    retry_waits=(5.0, 10.0, 20.0),
                    log=messages.append,
                )

            yield {
                "server": server,
                "settings": settings,
                "instance": instance,
                "runner": runner,
                "messages": messages,
                "lake": EventTable(settings.data_dir / "lake"),
            }
    server.stop()


def _runs(instance, day):
    return list(reversed(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": day.isoformat()}))))


def test_a_nightly_run_failing_while_s3_is_down_is_run_again_and_the_day_completes(live):
    server, instance = live["server"], live["instance"]
    runner = live["runner"]()
    runner._world_stage(DAY1, DayReport(DAY1))  # the world has played the day
    server.stop()

    def restart_after_the_first_failure():
        wait_until(
            lambda: any(r.status == dg.DagsterRunStatus.FAILURE for r in _runs(instance, DAY1)),
            timeout=300,
            interval=0.2,
        )
        server.start()

    thread = threading.Thread(target=restart_after_the_first_failure, daemon=True)
    thread.start()
    try:
        report = runner.play_day(DAY1)
    finally:
        thread.join(timeout=300)
        server.start()
    runs = _runs(instance, DAY1)
    assert [r.status for r in runs][0] == dg.DagsterRunStatus.FAILURE
    assert runs[-1].status == dg.DagsterRunStatus.SUCCESS
    assert all(r.tags["dagster/root_run_id"] == runs[0].run_id for r in runs[1:])
    assert any(r.startswith("nightly_refresh run") and "failed for an error" in r for r in report.retries)
    assert [(job, ok) for job, ok, _ in report.runs] == [("nightly_refresh", True)]
    assert DAY1.isoformat() in json.loads(runner.state_path.read_text())["done"]


def test_a_resumed_day_skips_its_finished_stages_and_refetches_a_truncated_events_file(live):
    instance, lake = live["instance"], live["lake"]
    first = live["runner"]()
    first._world_stage(DAY2, DayReport(DAY2))  # the world played D2, then the runner was stopped
    first.state["progress"] = {"day": DAY2.isoformat(), "stages": ["world"], "retrained": False}
    first._save_state()
    folder = first.world_dir / f"date={DAY2.isoformat()}"
    original = (folder / "events.parquet").read_bytes()
    log_stat = (folder / "serving_log.parquet").stat()
    with open(folder / "events.parquet", "r+b") as fh:  # a file damaged before its ingestion
        fh.truncate(len(original) * 2 // 5)

    report = live["runner"]().play_day(DAY2)  # a new runner: what pinrec-ops live does on restart

    assert (folder / "events.parquet").read_bytes() == original
    assert report.repairs and "fetched again from the world" in report.repairs[0]
    assert (folder / "serving_log.parquet").stat().st_mtime_ns == log_stat.st_mtime_ns  # not played again
    assert [r.status for r in _runs(instance, DAY2)] == [dg.DagsterRunStatus.SUCCESS]
    events, quarantine = lake.read_day(DAY2), lake.read_quarantine(DAY2)
    assert len(events) + len(quarantine) == pq.read_metadata(folder / "events.parquet").num_rows  # none lost
