"""A run whose process is killed mid-step (SIGKILL: no Python cleanup runs) stays STARTED in the
Dagster instance and keeps the pool slot its step claimed, so every later step of that pool would
wait forever. `orchestration.runs.fail_orphaned_runs` marks it failed and frees the slot; a run
whose process is alive is left alone."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from devstack.processes import start_process_group, wait_until
from orchestration.runs import PROCESS_TAG, dagster_home, fail_orphaned_runs
from storage.paths import REPO_ROOT

pytestmark = pytest.mark.services  # starts processes of its own

# A run of one step in the `training` pool that sleeps, executed in process as run_job does.
RUNNER = textwrap.dedent("""
    import time
    import dagster as dg
    from orchestration.runs import process_tag

    @dg.op(pool="training")
    def long_step():
        time.sleep(600)

    @dg.job
    def killed_mid_step():
        long_step()

    killed_mid_step.execute_in_process(instance=dg.DagsterInstance.get(), tags=process_tag())
""")


def _claimed(instance, run_id: str) -> bool:
    info = instance.event_log_storage.get_concurrency_info("training")
    return run_id in {slot.run_id for slot in info.claimed_slots}


def test_a_killed_runs_slot_is_freed_and_the_run_marked_failed(tmp_path):
    home = dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    proc = start_process_group(
        [sys.executable, "-c", RUNNER], cwd=REPO_ROOT, env=env, log=subprocess.DEVNULL, die_with_parent=True
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        try:
            assert wait_until(
                lambda: bool(instance.get_runs()) and _claimed(instance, instance.get_runs()[0].run_id),
                timeout=120,
                interval=0.2,
            ), "the step never claimed its training slot"
            run_id = instance.get_runs()[0].run_id
            assert instance.get_run_by_id(run_id).tags[PROCESS_TAG].startswith(f"{proc.pid}@")
            assert fail_orphaned_runs(instance) == []  # alive: not an orphan
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # what SIGKILL leaves
        assert _claimed(instance, run_id)

        assert fail_orphaned_runs(instance) == [run_id]
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert not _claimed(instance, run_id)
        failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
        assert "is gone" in failure.dagster_event.message
        assert fail_orphaned_runs(instance) == []  # once
