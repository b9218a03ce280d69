"""The drift sensor: retrain when a surface's outcome mix moves away from what its champion was
trained on."""

import json

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from pinrec_ops.defs import jobs
from pinrec_ops.defs.resources import DataLakeResource, S3Resource

# Thresholds on the mix of engaged outcomes (click/save/hide/...) of a surface. On the simulator a
# day without drift scores PSI <= 0.005, a halved save rate 0.15-0.2.
JS_THRESHOLD = 0.01   # Jensen-Shannon divergence (base 2)
PSI_THRESHOLD = 0.10  # population stability index; > 0.1 is the usual "moderate shift"


def evaluate_drift(lake: DataLakeResource, s3: S3Resource, cursor: dict, js_threshold: float = JS_THRESHOLD,
                   psi_threshold: float = PSI_THRESHOLD):
    """(run request or None, new cursor, per-surface figures) for the newest ingested day.

    The reference of a surface is its champion's training window (the manifest's data
    partitions). A drift fires once per champion: the cursor remembers the champion a retrain
    was requested for, so the same drift does not request again until a new champion exists.
    """
    from datetime import date

    from monitoring.drift import compare_outcome_mix, outcome_counts

    table = lake.table()
    days = table.days()
    if not days:
        return None, cursor, {}
    newest = days[-1]
    fired = dict(cursor.get("fired", {}))
    registry = s3.registry()
    figures, drifted = {}, []
    current = outcome_counts(table, [newest])
    for surface in sorted(set(current.index)):
        champion = registry.champion(surface)
        if champion is None:
            continue
        reference_days = [date.fromisoformat(d) for d in registry.manifest(surface, champion)["data_partitions"]]
        if newest in reference_days:
            continue
        reference = outcome_counts(table, reference_days)
        if surface not in reference.index:
            continue
        [report] = compare_outcome_mix(current.loc[[surface]], reference.loc[[surface]], js_threshold=js_threshold,
                                       psi_threshold=psi_threshold, min_rows=200)
        figures[surface] = {"js": round(report.js, 5), "psi": round(report.psi, 5), "drifted": report.drifted,
                            "champion": champion}
        if report.drifted and fired.get(surface) != champion:
            drifted.append(surface)
            fired[surface] = champion
    new_cursor = {"evaluated": newest.isoformat(), "fired": fired}
    if not drifted:
        return None, new_cursor, figures
    request = RunRequest(
        run_key=f"drift-{newest}-{'-'.join(drifted)}",
        partition_key=newest.isoformat(),
        tags={
            "pinrec/trigger": "outcome_drift",
            "pinrec/reason": f"outcome mix drift on {', '.join(drifted)} at {newest}",
            "pinrec/drift_figures": json.dumps({s: figures[s] for s in drifted}, sort_keys=True),
        },
    )
    return request, new_cursor, figures


@sensor(
    job=jobs.retrain,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description=f"Requests a retrain when a surface's outcome mix on the newest day drifts from its champion's "
                f"training window (JS > {JS_THRESHOLD} or PSI > {PSI_THRESHOLD}); once per champion.",
)
def outcome_drift_sensor(context: SensorEvaluationContext, lake: DataLakeResource, s3: S3Resource):
    cursor = json.loads(context.cursor) if context.cursor else {}
    newest = lake.table().days()[-1].isoformat() if lake.table().days() else None
    if newest is None or cursor.get("evaluated") == newest:
        return SkipReason(f"no new complete partition since {cursor.get('evaluated')}")
    request, new_cursor, figures = evaluate_drift(lake, s3, cursor)
    for surface, f in figures.items():
        context.log.info(f"{newest} {surface}: JS {f['js']}, PSI {f['psi']}, drifted {f['drifted']}")
    observation = AssetObservation(asset_key="events", partition=newest,
                                   metadata={f"{s}_{k}": v for s, f in figures.items() for k, v in f.items() if k != "champion"})
    return SensorResult(run_requests=[request] if request else [], cursor=json.dumps(new_cursor),
                        asset_events=[observation] if figures else [])
