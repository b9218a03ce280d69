"""The nightly job on Celery workers, for real: Redis as the broker (devstack.redis), two Celery
workers started with the production command (devstack.celery_workers: `dagster-celery worker
start`, deploy/celery/celery.yaml), and one run of `nightly_refresh` for a small simulated day
launched through the instance with the operator's command, `dagster job execute`, under
PINREC_EXECUTOR=celery. Used by tests/platform/test_celery_nightly.py and the `celery-nightly` row of
benchmarks/scale.py (`celery_nightly_row`).

The run starts from a prepared state (the days before ingested, a pretrained model: in-process
runs, `prepare`), so the timed part is the nightly run alone: ingest, features, online store,
then per surface fine-tune, publish, canary, promote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from assets.config import REPO_ROOT, load_settings
from assets.resources import S3Resource, build_resources
from devstack.celery_workers import CeleryWorkers
from devstack.redis import RedisServer
from orchestration.runs import EMBEDDED_INSTANCE, materialize_in_process, run_job
from orchestration.steps import DATA_ASSET_KEYS

# A small world and a tiny model (one training thread: the same bytes in any process).
SMALL = {
    "PINREC_SIM_USERS": "120",
    "PINREC_SIM_ITEMS": "400",
    "PINREC_SIM_EVENTS_PER_DAY": "6000",
    "PINREC_TRAIN_D_MODEL": "32",
    "PINREC_TRAIN_LAYERS": "1",
    "PINREC_TRAIN_HEADS": "1",
    "PINREC_TRAIN_MAX_LEN": "20",
    "PINREC_TRAIN_PRETRAIN_EPOCHS": "1",
    "PINREC_TRAIN_FINETUNE_EPOCHS": "1",
    "PINREC_TRAIN_FINETUNE_DAYS": "2",
    "PINREC_TRAIN_BATCH_SIZE": "64",
    "PINREC_TRAIN_THREADS": "1",
}
STEP_ON_WORKER = "in celery worker"  # dagster-celery's engine event when a worker takes a step
WORKER_KEY = "Celery worker"  # its metadata entry naming the worker


def pinrec_env(data_dir: Path, s3_env: dict[str, str], prefix: str, **extra: str) -> dict[str, str]:
    """This process's environment without PINREC_/DAGSTER_ settings, plus the small world's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PINREC_", "DAGSTER_"))}
    return {
        **env,
        **s3_env,
        **SMALL,
        "PINREC_SOURCE": "simulated",
        "PINREC_DATA_DIR": str(data_dir),
        "PINREC_S3_PREFIX": prefix,
        **extra,
    }


def resources_for(env: dict[str, str]) -> dict:
    """The code location's resources for `env` (S3 credentials still come from os.environ)."""
    resources = build_resources(load_settings(env))
    resources["s3"] = S3Resource(
        endpoint_url=env["PINREC_S3_ENDPOINT_URL"], bucket=env["PINREC_S3_BUCKET"], prefix=env["PINREC_S3_PREFIX"]
    )
    return resources


def days_of(env: dict[str, str]) -> tuple[list[date], date]:
    """(the three days before, the nightly run's day)."""
    first = load_settings(env).start_date
    return [first + timedelta(days=i) for i in range(3)], first + timedelta(days=3)


def prepare(env: dict[str, str], days: list[date]) -> None:
    """The state a nightly run starts from, by in-process runs: `days` ingested, a pretrained model."""
    settings, resources = load_settings(env), resources_for(env)
    with dg.instance_for_test() as instance:
        for day in days:
            run = run_job(
                "nightly_refresh", day, instance, settings=settings, assets=DATA_ASSET_KEYS, resources=resources
            )
            if not run.success:
                raise RuntimeError(f"preparing {day} failed")
        if not materialize_in_process(["pretrained_model"], resources, instance, settings=settings).success:
            raise RuntimeError("pretraining failed")


def steps_by_worker(records) -> dict[str, list[str]]:
    """Worker name -> the step keys it ran, from a run's event log."""
    workers: dict[str, list[str]] = {}
    for record in records:
        event = record.dagster_event
        if event is not None and event.is_engine_event and STEP_ON_WORKER in (event.message or ""):
            worker = event.engine_event_data.metadata[WORKER_KEY].value
            workers.setdefault(worker, []).append(event.step_key)
    return workers


def run_on_celery(
    env: dict[str, str], home: Path, day: date, log_dir: Path, workers: int = 2, timeout: float = 900
) -> dict:
    """Redis, `workers` Celery workers, and `dagster job execute` of nightly_refresh for `day`
    with PINREC_EXECUTOR=celery and the instance in `home` (SQLite, the embedded default's pools).
    Returns the command's result and time, the run, its event records and the workers' names and
    logs."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(EMBEDDED_INSTANCE)
    # Create the instance's SQLite storages here, once: processes that open a new instance at the
    # same moment (the workers, the run) each stamp its schema and leave it with two heads.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.get_latest_materialization_event(dg.AssetKey("events"))
    with RedisServer() as redis:
        broker = f"redis://{redis.host}:{redis.port}"
        env = {
            **env,
            "DAGSTER_HOME": str(home),
            "PINREC_EXECUTOR": "celery",
            "PINREC_CELERY_BROKER": f"{broker}/0",
            "PINREC_CELERY_BACKEND": f"{broker}/1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        }
        with CeleryWorkers(workers, env, log_dir) as pool:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    str(Path(sys.executable).parent / "dagster"),
                    "job",
                    "execute",
                    "-m",
                    "orchestration.definitions",
                    "-j",
                    "nightly_refresh",
                    "--tags",
                    json.dumps({"dagster/partition": day.isoformat()}),
                ],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            seconds = time.perf_counter() - t0
            logs = {name: pool.log_path(i).read_text(errors="replace") for i, name in enumerate(pool.names)}
            names = list(pool.names)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        records = instance.all_logs(runs[0].run_id) if runs else []
    return {"proc": proc, "seconds": seconds, "runs": runs, "records": records, "names": names, "logs": logs}


def celery_nightly_row(name: str, work: Path, log) -> dict:
    """The `celery-nightly` row: SeaweedFS for S3, the prepared state, then the timed run."""
    import shutil

    from devstack.seaweedfs import SeaweedFS

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with SeaweedFS(work / "seaweedfs") as s3:
        os.environ.update({k: v for k, v in s3.env().items() if k.startswith("AWS_")})
        env = pinrec_env(work / "data", s3.env(), "celery-nightly")
        before, day = days_of(env)
        t0 = time.perf_counter()
        prepare(env, before)
        log(f"{name}: prepared {len(before)} days and a pretrained model in {time.perf_counter() - t0:.0f} s")
        out = run_on_celery(env, work / "dagster_home", day, work / "logs")
    proc, runs = out["proc"], out["runs"]
    if proc.returncode != 0 or not runs:
        raise RuntimeError(f"the Celery run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    workers = steps_by_worker(out["records"])
    shutil.rmtree(work, ignore_errors=True)
    return {
        "name": name,
        "seconds": round(out["seconds"], 1),
        "workers_used": len(workers),
        "workers": len(out["names"]),
        "steps": sum(len(s) for s in workers.values()),
        "steps_per_worker": ", ".join(f"{w.split('@')[0]}: {len(s)}" for w, s in sorted(workers.items())),
        "run_status": runs[0].status.value,
        "day": day.isoformat(),
        "world": f"{SMALL['PINREC_SIM_USERS']} users, {SMALL['PINREC_SIM_ITEMS']} items, "
        f"{SMALL['PINREC_SIM_EVENTS_PER_DAY']} events a day",
    }
