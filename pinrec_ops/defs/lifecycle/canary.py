"""Per surface: the candidate evaluated against the champion on the partition's day (which neither
trained on) through the serving retrieval path, and the blocking gate on promotion."""

from datetime import datetime, time, timezone
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from pinrec_ops.defs.config import SETTINGS
from pinrec_ops.defs.days import days_in_window, partition_day
from pinrec_ops.defs.partitions import daily_partitions
from pinrec_ops.defs.resources import DataLakeResource, FeastResource, S3Resource
from pinrec_ops.defs.state import lifecycle_state

CANARY_K = 100


def _md_table(rows: dict[str, dict[str, float]]) -> str:
    names = sorted({m for r in rows.values() for m in r})
    cols = list(rows)
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for m in names:
        lines.append(f"| {m} | " + " | ".join(f"{rows[c].get(m, float('nan')):.4f}" for c in cols) + " |")
    return "\n".join(lines)


class CanaryConfig(Config):
    max_users: int = Field(default=400, description="Users of the evaluation day sampled for the canary.")


def _sequences_at_day_start(feast: FeastResource, users: list[int], day) -> dict:
    """Each user's sequence as the online store held it when the day began (point in time)."""
    import pandas as pd

    from feature_pipeline.store import training_examples
    from serving.encoder import UserSequence

    start = pd.Timestamp(datetime.combine(day, time(0), tzinfo=timezone.utc))
    rows = training_examples(feast.store(), pd.DataFrame({"user_id": users, "event_ts": start}))
    return {int(r["user_id"]): UserSequence.from_features(r) for r in rows.to_dict("records")}


def canary_evaluation_asset(surface: str):
    @asset(
        key=AssetKey([surface, "canary_evaluation"]),
        deps=[AssetKey([surface, "candidate_version"])],
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=surface,
        description=f"Candidate vs champion on {surface}, on the partition's day (which neither trained on): "
                    "recall@100 per outcome, diversity, latency, through the serving retrieval path.",
    )
    def canary_evaluation(context: AssetExecutionContext, config: CanaryConfig, lake: DataLakeResource,
                          feast: FeastResource, s3: S3Resource) -> MaterializeResult:
        from serving.canary import evaluate_version
        from serving.retriever import LoadedVersion

        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        candidate = state.read("candidate", surface, day)["version"]
        # an earlier verdict of this day must not outlive a new evaluation that fails
        state.path("canary", surface, day).unlink(missing_ok=True)
        champion = registry.champion(surface)
        events = lake.table().read_day(day)
        events = events[events["surface"] == surface]
        users = sorted(set(events.loc[events["outcome"] != "impression", "user_id"].tolist()))
        users = users[:: max(1, len(users) // config.max_users)][: config.max_users]
        events = events[events["user_id"].isin(users)]
        sequences = _sequences_at_day_start(feast, users, day)
        cache = Path(lake.root).parent / "version_cache"
        results = {}
        for role, version in (("candidate", candidate), ("champion", champion)):
            if version is None or (role == "champion" and version == candidate):
                continue
            loaded = LoadedVersion.from_local(registry.fetch(surface, version, cache))
            results[role] = evaluate_version(loaded, sequences, events, k=CANARY_K)
        state.write({"candidate": candidate, "champion": champion if "champion" in results else None,
                     "metrics": results, "users": len(users)}, "canary", surface, day)
        return MaterializeResult(metadata={
            "candidate": candidate, "champion": champion or "none (the first candidate bootstraps it)",
            "users": len(users), "metrics": MetadataValue.md(_md_table(results)),
            f"candidate_recall@{CANARY_K}": results["candidate"][f"recall@{CANARY_K}"],
        })

    return canary_evaluation


class CanaryGateConfig(Config):
    tolerance: float = Field(default=0.05, description="Largest relative drop vs the champion on a guarded metric.")
    recall_floor: float = Field(default=0.02, description=f"Absolute floor on recall@{CANARY_K}.")
    max_latency_ratio: float = Field(default=1.5, description="Largest candidate/champion ratio of median latency (same run).")
    max_latency_p99_ms: float = Field(default=2000.0, description="Absolute cap on p99 retrieval latency per user.")


def canary_gate_check(surface: str):
    @asset_check(
        asset=AssetKey([surface, "canary_evaluation"]),
        name="canary_gate",
        blocking=True,
        description="Blocks promotion unless the candidate is within tolerance of the champion on every guarded "
                    "metric and clears the absolute floors.",
    )
    def canary_gate(context: AssetCheckExecutionContext, config: CanaryGateConfig, lake: DataLakeResource) -> AssetCheckResult:
        from serving.canary import GatePolicy, gate

        day = days_in_window(context.op_execution_context.partition_time_window)[-1]
        canary = lifecycle_state(lake).read("canary", surface, day)
        policy = GatePolicy(tolerance=config.tolerance, floors={f"recall@{CANARY_K}": config.recall_floor},
                            max_latency_ratio=config.max_latency_ratio, max_latency_p99_ms=config.max_latency_p99_ms)
        passed, reasons = gate(canary["metrics"]["candidate"], canary["metrics"].get("champion"), policy)
        lifecycle_state(lake).write({**canary, "passed": passed, "reasons": reasons}, "canary", surface, day)
        return AssetCheckResult(
            passed=passed, severity=AssetCheckSeverity.ERROR,
            description="candidate passes the gate" if passed else "; ".join(reasons),
            metadata={"candidate": canary["candidate"], "champion": canary["champion"] or "none",
                      "reasons": MetadataValue.json(reasons)},
        )

    return canary_gate


canary_evaluations = [canary_evaluation_asset(surface) for surface in SETTINGS.surfaces]
canary_gates = [canary_gate_check(surface) for surface in SETTINGS.surfaces]
