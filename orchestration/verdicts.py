"""What a run of a day decided, read back from the Dagster instance: the one line the main command,
`pinrec-ops backfill` and `pinrec-ops live` print per day.

- `FAILED: <first error line>`: a step failed for an error (not a gate's verdict), or a check
  that is not a promotion gate failed (bad rows, a broken table);
- `not promoted: <first reason>`: a promotion gate (`canary_gate`, `online_canary_gate`, or any
  check that records a `verdict`) refused its candidate, whether that refusal failed the run (a
  blocking check) or left it successful with the reasons on the check and the run's verdict tags
  (`pinrec/verdict/<surface>`, read first when a run has them);
- `promoted (<surfaces>)`: a champion was promoted;
- `trial continues: <surface>: <why>`: an online canary's trial goes on another day (too few
  users or too little information for its decision yet: `serving.evaluation.online_gate`);
- `ok`: the run did its work and decided nothing (data only, or a candidate released as canary).
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

GATE_CHECKS = ("canary_gate", "online_canary_gate")
VERDICT_TAG = "pinrec/verdict"  # a run's verdict tags, per surface: pinrec/verdict/<surface>
CHECK_FAILED = "DagsterAssetCheckFailedError"  # a blocking check's failure: a verdict, not an error


def _first_line(text: str | None) -> str:
    return (str(text or "").strip().splitlines() or [""])[0]


def step_errors(instance: dg.DagsterInstance, run_id: str, *, verdicts: bool = True) -> list[str]:
    """`step: first line of its error` for each failed step of a run (without the failures a
    blocking check's verdict caused, unless `verdicts`)."""
    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        if not verdicts and error is not None and CHECK_FAILED in (error.cls_name or "") + error.message:
            continue
        message = _first_line(error.message) if error else ""
        out.append(f"{event.step_key}: {message}" if event else message)
    return out


def failed_for_an_error(instance: dg.DagsterInstance, run_ids: Sequence[str]) -> list[str]:
    """Runs that failed for another reason than a gate's verdict (a blocking check that failed)."""
    failed = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status != dg.DagsterRunStatus.FAILURE:
            continue
        if step_errors(instance, run_id, verdicts=False) or not step_errors(instance, run_id):
            failed.append(run_id)
    return failed


def first_reason(evaluation) -> str:
    """A refused check's first reason: its `reasons` metadata (a list or text), else the first
    clause of its description."""
    value = evaluation.metadata.get("reasons") if evaluation.metadata else None
    value = getattr(value, "value", value)
    if isinstance(value, (list, tuple)) and value:
        return _first_line(value[0])
    if isinstance(value, str) and value.strip():
        return _first_line(value).split("; ")[0]
    return _first_line(evaluation.description).split("; ")[0] or "refused (no reason recorded)"


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list:
    """The asset-check evaluations a run recorded (dagster's AssetCheckEvaluation)."""
    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        data = record.dagster_event.event_specific_data if record.dagster_event else None
        if data is not None:
            out.append(data)
    return out


def _is_gate(evaluation) -> bool:
    return evaluation.check_name in GATE_CHECKS or "verdict" in (evaluation.metadata or {})


def _tagged_verdicts(run) -> dict[str, str]:
    """Per surface, the verdict line a run's gates and champion steps tagged it with
    (`pinrec/verdict/<surface>`: `passed`, `promoted` or `not promoted: <reason>`), if any."""
    prefix = VERDICT_TAG + "/"
    return {k[len(prefix) :]: v for k, v in (run.tags if run else {}).items() if k.startswith(prefix)}


def run_verdict(instance: dg.DagsterInstance, run_id: str) -> str:
    """The day line's verdict of a run (module docstring)."""
    evaluations = check_evaluations(instance, run_id)
    errors = step_errors(instance, run_id, verdicts=False)
    errors += [
        f"{e.asset_key.to_user_string()} {e.check_name}: {_first_line(e.description)}"
        for e in evaluations
        if not e.passed and not _is_gate(e) and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    run = instance.get_run_by_id(run_id)
    if not errors and run is not None and run.status == dg.DagsterRunStatus.FAILURE:
        if not step_errors(instance, run_id):
            errors = ["the run failed (see it in the UI)"]
    if errors:
        return f"FAILED: {errors[0]}"
    tagged = _tagged_verdicts(run)
    if tagged:  # the gates' own lines, when they tag the run
        refused = {s: line for s, line in sorted(tagged.items()) if line.startswith("not promoted")}
        promoted = sorted(s for s, line in tagged.items() if line == "promoted")
        continuing = {s: line for s, line in sorted(tagged.items()) if line.startswith("trial continues")}
        if refused:
            surface, line = next(iter(refused.items()))
            also = f" (promoted: {', '.join(promoted)})" if promoted else ""
            return f"not promoted: {surface}: {line.removeprefix('not promoted: ')}{also}"
        if promoted:
            return f"promoted ({', '.join(promoted)})"
        if continuing:
            surface, line = next(iter(continuing.items()))
            return f"trial continues: {surface}: {line.removeprefix('trial continues: ')}"
        return "ok"
    refused = [e for e in evaluations if _is_gate(e) and not e.passed]
    promoted = sorted(
        {
            r.dagster_event.asset_key.path[0]
            for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            if r.dagster_event and r.dagster_event.asset_key and r.dagster_event.asset_key.path[-1] == "champion"
        }
    )
    if refused:
        first = refused[0]
        also = f" (promoted: {', '.join(promoted)})" if promoted else ""
        return f"not promoted: {first.asset_key.path[0]}: {first_reason(first)}{also}"
    if promoted:
        return f"promoted ({', '.join(promoted)})"
    return "ok"
