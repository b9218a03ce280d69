"""A gate's verdict, the same way for the offline and the online gate, and where it can be read.

A verdict is not an error: a refused candidate leaves its run SUCCESSFUL. The gate's check
fails with WARN severity (so the UI shows it failed, and the steps after it still run and decide
from the verdict: the champion step promotes nothing), and the verdict is written

- on the check: metadata `verdict` (`passed` or `not promoted: <first reason>`), `reasons` (every
  broken rule), `rules` (a table: each rule's figures, margin and the rule as it is read);
- on the run: tag `pinrec/verdict/<surface>` (the same line) and, when any gate of the run
  refused, `pinrec/verdict` = `not promoted`.

A run is red only when something broke (a step raised: S3 unreachable, a missing upstream).
"""

from __future__ import annotations

from dataclasses import asdict

import dagster as dg

from assets.conventions import code_version
from assets.metadata import table_metadata
from assets.records import CanaryRecord, CandidateRecord, PromotionRecord
from serving.evaluation.gate import GateRule, Verdict

VERDICT_TAG = "pinrec/verdict"
NOT_PROMOTED = "not promoted"


def verdict_tag(surface: str) -> str:
    return f"{VERDICT_TAG}/{surface}"


def tag_run(context: dg.OpExecutionContext, surface: str, line: str) -> None:
    """The run's verdict tags for `surface` (see the module docstring)."""
    tags = {verdict_tag(surface): line[:1000]}
    if line.startswith(NOT_PROMOTED):
        tags[VERDICT_TAG] = NOT_PROMOTED
    context.instance.add_run_tags(context.run.run_id, tags)


def rules_table(rules: list[GateRule]) -> dg.MetadataValue:
    return table_metadata(
        [{**asdict(r), "as_read": r.rendered()} for r in rules],
        {
            "rule": "string",
            "metric": "string",
            "as_read": "string",
            "candidate": "float",
            "champion": "float",
            "threshold": "float",
            "margin": "float",
            "passed": "bool",
        },
    )


def verdict_result(
    context: dg.AssetCheckExecutionContext,
    surface: str,
    verdict: Verdict,
    rules: list[GateRule],
    description: str,
    metadata: dict,
    *,
    line: str | None = None,
) -> dg.AssetCheckResult:
    """The check's result for `verdict`: passed, or failed with WARN severity (a verdict, not an
    error); the run tagged with `line` (default the verdict's), the rules rendered one way for
    every gate."""
    line = line or verdict.line
    tag_run(context.op_execution_context, surface, line)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "verdict": line,
            "reasons": dg.MetadataValue.json(list(verdict.reasons)),
            "rules": rules_table(rules),
            **{f"margin/{r.metric}": r.margin for r in rules},
            **metadata,
        },
    )


def judged_candidate(state, surface: str, day, step: str) -> tuple[str, CanaryRecord]:
    """The day's candidate of `surface` and the offline verdict on it, for a step that acts on the
    verdict (`step`: "promoting", "releasing"); fails when the verdict is for another candidate
    or the gate has not judged it."""
    canary = state.load(CanaryRecord, surface, day)
    candidate = state.load(CandidateRecord, surface, day).version
    if canary.candidate != candidate:
        raise dg.Failure(
            f"the canary verdict of {surface} on {day} is for {canary.candidate}, but the "
            f"current candidate is {candidate}: re-run {surface}/canary_evaluation; not {step}"
        )
    if canary.passed is None:
        raise dg.Failure(f"{surface}/{candidate} has no gate verdict for {day}: run its canary_gate first; not {step}")
    return candidate, canary


def promotion_code(module: str) -> str:
    """The code version of a champion step in `module`: it, this module, the registry's promote
    (the staleness rule) and the gate's rules decide its output."""
    return code_version(module, __name__, "serving.registry.store", "serving.evaluation.gate")


def promote_or_not(
    context, registry, state, surface: str, day, version: str, refused: str | None, *, allow_older: bool = False
) -> dict | None:
    """Promote `version` unless `refused` (the gate's first reason) or the registry refuses it as
    stale (`allow_older`: the champion it replaces is not comparable, so its days say nothing);
    records the outcome (PromotionRecord, the run's verdict tag) either way. The pointer after a
    promotion, None when nothing was promoted."""
    from serving.registry.manifest import StaleVersionError

    before = registry.champion(surface)
    pointer = None
    if refused is None:
        try:
            pointer = (
                registry.promote(surface, version, allow_older=allow_older)
                if before != version
                else {"version": before}
            )
        except StaleVersionError as exc:
            refused = str(exc)
    line = "promoted" if refused is None else f"not promoted: {refused}"
    state.save(
        PromotionRecord(
            version=version if refused is None else before,
            previous=before,
            promoted=refused is None,
            verdict=line,
        ),
        surface,
        day,
    )
    tag_run(context, surface, line)
    if refused is not None:
        context.log.info(f"{surface} on {day}: {version} {line}")
    return pointer
