"""The drift sensor: retrain when a surface moves away from what its champion was trained on.

Three signals per surface, each on the newest ingested day:
- the mix of engaged outcomes against the champion's training window (JS / PSI): an outcome-mix
  drift (saves rarer, hides more common);
- the champion's online engagements (clicks + saves) per 1,000 served impressions against its
  trailing mean of the days before (the day's serving log, `online_metrics`): an interest shift
  barely moves the outcome mix, but users stop engaging with what the champion serves;
- the champion's recall@100 on the newest day (the canary evaluation measures it) against its
  trailing mean.
An online signal's drop counts only when it is also `DRIFT_Z` standard errors of the difference
(today's sampling error over users with the trailing days') below its reference: a canary sample of
a few hundred users moves recall@100 by 20-30% from day to day on its own, which fired retrains on
days without a shift in the 30-day closed loop of 2026-12-05.
The trailing days of an online signal are the days today's champion served as champion (a promotion changes the
level of both figures: it is not a drift).
Any signal above its threshold requests a retrain. One shift, one retrain (`monitoring.shift`): the day
that fired becomes the surface's shift start (the cursor remembers), and the days after it are
judged against the shift's own days (outcome mix) and trailing means cut at the shift start (online
signals) until the champion's training window lies wholly after the shift start: a persistent shift
asks once, a second, different shift asks again."""

import json
from collections.abc import Sequence
from datetime import date, timedelta

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.records import CanaryRecord
from assets.resources import DataLakeResource, S3Resource
from assets.state import lifecycle_state
from monitoring.shift import ShiftMemory, since_shift

# Thresholds on the mix of engaged outcomes (click/save/hide/...) of a surface. On the simulator a
# day without drift scores PSI <= 0.005, a halved save rate 0.15-0.2.
JS_THRESHOLD = 0.01  # Jensen-Shannon divergence (base 2)
PSI_THRESHOLD = 0.10  # population stability index; > 0.1 is the usual "moderate shift"
# Relative drops against the trailing mean of the previous TRAILING_DAYS days. A surface's daily
# served engagements per 1,000 impressions move by a few percent from day to day on the simulator
# (binomial noise over ~10^4 impressions); a drop of 15% is far outside that.
ONLINE_DROP_THRESHOLD = 0.15
RECALL_DROP_THRESHOLD = 0.20
TRAILING_DAYS = 7
MIN_REFERENCE_DAYS = 3  # a trailing mean of fewer days is no reference
MIN_SERVED_IMPRESSIONS = 2000  # fewer champion-served impressions on the day: too noisy to judge
# ... and a drop must be this many standard errors of (reference - today): one-sided, about 1 false
# fire in 700 judged (surface, signal, day) without a shift
DRIFT_Z = 3.0


def trailing_drop(values: list[tuple[float, float]], today: float, today_se: float) -> tuple[float, float] | None:
    """(1 - today / mean of the values, (mean - today) / its standard error) for `values`, the
    trailing days' (figure, standard error): the relative drop and how many standard errors it
    is (None without a reference of MIN_REFERENCE_DAYS days). The reference's standard error is
    that of a mean of independent days; a figure without one (NaN) counts as exact."""
    values = [(v, se) for v, se in values if v == v]  # drop NaN
    if len(values) < MIN_REFERENCE_DAYS or today != today:
        return None
    reference = sum(v for v, _ in values) / len(values)
    if reference <= 0:
        return None
    reference_var = sum((se if se == se else 0.0) ** 2 for _, se in values) / len(values) ** 2
    se = (reference_var + (today_se if today_se == today_se else 0.0) ** 2) ** 0.5
    z = (reference - today) / se if se > 0 else float("inf") if reference > today else 0.0
    return 1.0 - today / reference, z


def online_signals(
    lake: DataLakeResource, days: list[date], surface: str, memory: ShiftMemory | None = None
) -> dict[str, float]:
    """The champion's engagements per 1,000 served impressions and recall@100 on the newest day,
    and their drops against the trailing mean of the days before (none before the shift start of
    `memory`, and where the days' canary evaluations name their champion only the days today's
    champion served as champion: none on the day of a promotion)."""
    state = lifecycle_state(lake)
    newest, before = days[-1], since_shift(days[-1 - TRAILING_DAYS : -1], memory or ShiftMemory())

    def champion_of(day) -> str | None:
        """The champion the day's canary evaluation judged (None: no evaluation that day)."""
        return state.load(CanaryRecord, surface, day).champion if state.has(CanaryRecord, surface, day) else None

    def steady(day) -> bool:
        """The day's champion was champion the day before too: it served the day as champion."""
        return champion_of(day) is not None and champion_of(day) == champion_of(day - timedelta(days=1))

    # A trailing mean of another champion's days is that model's level, not a reference, and so is
    # the day a version is promoted on (it served that day as a canary, on a quarter of the users):
    # in the closed loop a promoted version's recall@100 went from 0.12 on its promotion day to 0.04
    # the next (once it serves everyone, its own slots leave its held-out targets), which read as a
    # drift on days 13 and 15. Only steady days of today's champion are its reference.
    today_champion = champion_of(newest)
    if today_champion is not None:
        if not steady(newest):
            return {}
        before = [d for d in before if steady(d) and champion_of(d) == today_champion]

    nothing = (float("nan"), float("nan"))

    def engaged(day) -> tuple[float, float]:
        path = state.path("online_metrics", "_all", day)
        if not path.exists():
            return nothing
        champion = json.loads(path.read_text()).get("by_served_by", {}).get(surface, {}).get("champion")
        if not champion or champion["impressions"] < MIN_SERVED_IMPRESSIONS:
            return nothing
        # the bootstrap half-widths over users of the two rates, as one standard error
        se = sum((champion.get(f"ci95_{o}_per_1k", float("nan")) / 1.96) ** 2 for o in ("clicks", "saves")) ** 0.5
        return champion["clicks_per_1k"] + champion["saves_per_1k"], se

    def recall(day) -> tuple[float, float]:
        if not state.has(CanaryRecord, surface, day):
            return nothing
        champion = state.load(CanaryRecord, surface, day).metrics.get("champion")
        if not champion:
            return nothing
        return champion.get("recall@100", float("nan")), champion.get("recall@100_se", float("nan"))

    out = {}
    for name, fn in (("online_engaged_per_1k", engaged), ("recall@100", recall)):
        today, today_se = fn(newest)
        drop = trailing_drop([fn(d) for d in before], today, today_se)
        if drop is not None:
            out[name] = round(today, 5)
            out[f"{name}_drop"] = round(drop[0], 5)
            out[f"{name}_drop_z"] = round(min(drop[1], 99.0), 3)
    return out


def dropped(signals: dict[str, float], name: str, threshold: float) -> bool:
    """Whether `signals` show a drop of `name` above `threshold` (relative) that is also DRIFT_Z
    standard errors."""
    return signals.get(f"{name}_drop", 0.0) > threshold and signals.get(f"{name}_drop_z", 0.0) >= DRIFT_Z


def evaluate_drift(
    lake: DataLakeResource,
    s3: S3Resource,
    cursor: dict,
    js_threshold: float = JS_THRESHOLD,
    psi_threshold: float = PSI_THRESHOLD,
    outcomes: Sequence[str] | None = None,
):
    """(run request or None, new cursor, per-surface figures) for the newest ingested day.

    The outcome-mix reference of a surface is its champion's training window (the manifest's data
    partitions), or after a drift the shift's own days (`monitoring.shift.reference_days`): the
    cursor remembers each surface's shift start (`shifts`) and the champion a retrain was last
    requested for (`fired`, a record), so the same shift does not request again.
    The outcomes compared are `outcomes` (the sensor's: its settings' vocabulary's `drift`; None:
    the built-in vocabulary's).
    """
    from monitoring.drift import compare_outcome_mix, outcome_counts
    from monitoring.shift import after_judgement, reference_days

    table = lake.table()
    days = table.days()
    if not days:
        return None, cursor, {}
    newest = days[-1]
    fired = dict(cursor.get("fired", {}))
    shifts = dict(cursor.get("shifts", {}))
    registry = s3.registry()
    figures, drifted = {}, []
    if outcomes is None:
        from events.vocabulary import builtin_vocabulary

        outcomes = builtin_vocabulary().drift
    current = outcome_counts(table, [newest], outcomes=outcomes)
    for surface in sorted(set(current.index)):
        champion = registry.champion(surface)
        if champion is None:
            continue
        training_days = [date.fromisoformat(d) for d in registry.manifest(surface, champion)["data_partitions"]]
        if newest in training_days:
            continue
        memory = ShiftMemory.from_cursor(shifts.get(surface))
        judged_against = reference_days(training_days, days, newest, memory)
        reference = outcome_counts(table, judged_against, outcomes=outcomes)
        if surface not in reference.index:
            continue
        [report] = compare_outcome_mix(
            current.loc[[surface]],
            reference.loc[[surface]],
            js_threshold=js_threshold,
            psi_threshold=psi_threshold,
            min_rows=200,
        )
        signals = online_signals(lake, days, surface, memory)
        reasons = []
        if report.drifted:
            reasons.append("outcome_mix")
        if dropped(signals, "online_engaged_per_1k", ONLINE_DROP_THRESHOLD):
            reasons.append("online_engagement")
        if dropped(signals, "recall@100", RECALL_DROP_THRESHOLD):
            reasons.append("recall")
        figures[surface] = {
            "js": round(report.js, 5),
            "psi": round(report.psi, 5),
            **signals,
            "drifted": bool(reasons),
            "signals": ",".join(reasons),
            "champion": champion,
            "reference": f"{judged_against[0]}..{judged_against[-1]}" if judged_against else "",
        }
        memory = after_judgement(memory, training_days, newest, bool(reasons))
        shifts[surface] = memory.to_cursor()
        if reasons:
            drifted.append(surface)
            fired[surface] = champion
    new_cursor = {
        "evaluated": newest.isoformat(),
        "fired": fired,
        "shifts": {s: d for s, d in shifts.items() if d},
    }
    if not drifted:
        return None, new_cursor, figures
    request = RunRequest(
        run_key=f"drift-{newest}-{'-'.join(drifted)}",
        partition_key=newest.isoformat(),
        tags={
            "pinrec/trigger": "drift",
            "pinrec/reason": "; ".join(f"{s}: {figures[s]['signals']}" for s in drifted) + f" at {newest}",
            "pinrec/drift_figures": json.dumps({s: figures[s] for s in drifted}, sort_keys=True),
        },
    )
    return request, new_cursor, figures


def outcome_drift_sensor(retrain, outcomes: Sequence[str]) -> SensorDefinition:
    """The sensor of the graph's `retrain` job, comparing the mix of `outcomes` (the settings'
    vocabulary's `drift`)."""

    @sensor(
        job=retrain,
        name="outcome_drift_sensor",
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Requests a retrain when a surface drifts from its champion on the newest day: its outcome mix "
        f"against the champion's training window (JS > {JS_THRESHOLD} or PSI > {PSI_THRESHOLD}), the "
        f"champion's online engagements per served impression (a drop > {ONLINE_DROP_THRESHOLD:.0%}) or its "
        f"recall (a drop > {RECALL_DROP_THRESHOLD:.0%}) against their trailing means, a drop also {DRIFT_Z:g} standard "
        f"errors; once per shift (the days "
        f"after a drift are judged against the shift's own days).",
    )
    def sensor_fn(context: SensorEvaluationContext, lake: DataLakeResource, s3: S3Resource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        newest = lake.table().days()[-1].isoformat() if lake.table().days() else None
        if newest is None or cursor.get("evaluated") == newest:
            return SkipReason(f"no new complete partition since {cursor.get('evaluated')}")
        request, new_cursor, figures = evaluate_drift(lake, s3, cursor, outcomes=outcomes)
        for surface, f in figures.items():
            context.log.info(f"{newest} {surface}: " + ", ".join(f"{k} {v}" for k, v in f.items() if k != "champion"))
        observation = AssetObservation(
            asset_key="events",
            partition=newest,
            metadata={
                f"{s}_{k}": v
                for s, f in figures.items()
                for k, v in f.items()
                if k not in ("champion", "signals") and isinstance(v, (int, float))
            },
        )
        return SensorResult(
            run_requests=[request] if request else [],
            cursor=json.dumps(new_cursor),
            asset_events=[observation] if figures else [],
        )

    return sensor_fn
