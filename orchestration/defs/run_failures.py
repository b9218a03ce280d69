"""A run-failure sensor: when a run of this code location fails, log which assets' steps failed
and why, and POST the same report as JSON to PINREC_ALERT_WEBHOOK_URL when it is set."""

from __future__ import annotations

import json
import os
import urllib.request

import dagster as dg

WEBHOOK_VARIABLE = "PINREC_ALERT_WEBHOOK_URL"


def failure_report(context: dg.RunFailureSensorContext) -> dict:
    """What failed: the run, its job and partition, and per failed step its assets and error."""
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        error = data.error.message.strip().splitlines()[0] if data and data.error else "unknown error"
        steps.append({"step": event.step_key, "error": error})
    failed_assets = set()
    if run.asset_selection:
        for step in steps:
            failed_assets |= {
                k.to_user_string()
                for k in run.asset_selection
                if k.path[-1] in step["step"] or k.to_user_string().replace("/", "__") in step["step"]
            }
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "trigger": run.tags.get("pinrec/trigger"),
        "failed_steps": steps,
        "failed_assets": sorted(failed_assets),
        "run_failure": context.failure_event.message,
    }


def post_webhook(url: str, report: dict, timeout: float = 10.0) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(report).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


@dg.run_failure_sensor(
    name="run_failure_report",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs which assets of a failed run failed and why; POSTs the report as JSON to "
    f"{WEBHOOK_VARIABLE} when it is set.",
)
def run_failure_report(context: dg.RunFailureSensorContext):
    report = failure_report(context)
    steps = "; ".join(f"{s['step']}: {s['error']}" for s in report["failed_steps"]) or report["run_failure"]
    context.log.error(f"run {report['run_id']} of {report['job']} (partition {report['partition']}) failed: {steps}")
    url = os.environ.get(WEBHOOK_VARIABLE)
    if url:
        try:
            post_webhook(url, report)
        except OSError as exc:
            context.log.error(f"could not POST the failure report to {WEBHOOK_VARIABLE}: {exc}")
