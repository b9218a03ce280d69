"""Dagster on Celery, for real: a Redis broker (Debian's redis-server), two Celery workers started
with the production command (`dagster-celery worker start`, deploy/celery/celery.yaml), and one run
of `nightly_refresh` for a small day launched through the instance with `dagster job execute`
(PINREC_EXECUTOR=celery; benchmarks/celery_nightly.py): the run succeeds, its steps ran on both
workers, and its outputs equal those of the same day run in process from the same starting state.

Marked `scale_out` (about two minutes on 2 cores); the default run, and so CI, includes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets.config import load_settings
from benchmarks.celery_nightly import (
    days_of,
    pinrec_env,
    prepare,
    resources_for,
    run_on_celery,
    steps_by_worker,
)
from events.table import EventTable, file_sha256
from feature_pipeline.store import FeastSettings, offline_table_path
from orchestration.runs import run_job
from tests.helpers import mechanics_gate

pytestmark = pytest.mark.scale_out


def _outputs(env: dict[str, str], day) -> dict:
    """What a nightly run of `day` produced: data files' bytes, each surface's published content."""
    data_dir = Path(env["PINREC_DATA_DIR"])
    table = EventTable(data_dir / "lake")
    files = {
        "events": table.events_path(day),
        "quarantine": table.quarantine_path(day),
        **{
            view: offline_table_path(FeastSettings(data_dir / "feast"), view, day)
            for view in ("user_sequence", "item_stats", "item_surface_stats")
        },
    }
    registry = resources_for(env)["s3"].registry()
    published = {}
    for surface in load_settings(env).surfaces:
        manifest = registry.manifest(surface, registry.champion(surface))
        published[surface] = {
            "content": manifest["id_sha256"],
            "files": manifest["files"],
            "data_partitions": manifest["data_partitions"],
        }
    return {"files": {name: file_sha256(path) for name, path in files.items()}, "published": published}


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory, s3_env):
    tmp = tmp_path_factory.mktemp("celery")
    reference = pinrec_env(tmp / "in-process", s3_env.env(), "celery-in-process")
    # the subject is the executor, not model quality: both runs bootstrap their tiny model's
    # candidate without the gate's beat-the-baselines rule (env for the workers, run config here)
    on_celery = pinrec_env(tmp / "celery", s3_env.env(), "celery-celery", PINREC_GATE_BASELINES="0")
    before, day = days_of(reference)
    prepare(reference, before)
    prepare(on_celery, before)
    with dg.instance_for_test() as instance:  # the reference: the same job and day, in process
        settings = load_settings(reference)
        gate = mechanics_gate(settings.surfaces)
        resources = resources_for(reference)
        assert run_job(
            "nightly_refresh", day, instance, settings=settings, resources=resources, run_config=gate
        ).success
    out = run_on_celery(on_celery, tmp / "dagster_home", day, tmp / "logs")
    yield {**out, "day": day, "celery": _outputs(on_celery, day), "in_process": _outputs(reference, day)}
    shutil.rmtree(tmp, ignore_errors=True)


def test_the_nightly_run_on_celery_succeeds_through_the_instance(celery_run):
    proc = celery_run["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [run] = celery_run["runs"]
    assert run.job_name == "nightly_refresh" and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == celery_run["day"].isoformat()


def test_its_steps_ran_on_both_celery_workers(celery_run):
    workers = steps_by_worker(celery_run["records"])
    assert set(workers) == set(celery_run["names"]), workers
    steps = [s for ss in workers.values() for s in ss]
    assert len(steps) == len(set(steps)) >= 10, workers  # each step once: data, then per surface 4 steps
    assert any(s.endswith("finetuned_model") for s in steps) and "ingest_events" in steps
    for name, log in celery_run["logs"].items():
        assert "succeeded in" in log, f"{name}'s log shows no finished task"


def test_its_outputs_equal_the_in_process_run(celery_run):
    celery, in_process = celery_run["celery"], celery_run["in_process"]
    assert celery["files"] == in_process["files"]
    assert celery["published"] == in_process["published"]
    assert len(celery["published"]) == 3
