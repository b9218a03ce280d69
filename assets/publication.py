"""Per surface: publish the fine-tuned model as a versioned faiss index in S3, evaluate it
against the champion on the day neither trained on, gate promotion on a blocking check, and
move champion.json."""

from datetime import datetime, time, timedelta, timezone
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

from assets.days import days_in_window
from assets.retries import S3_RETRY
from assets.training import lifecycle_state
from orchestration.partitions import daily_partitions
from orchestration.resources import DataLakeResource, FeastResource, S3Resource

CANARY_K = 100


def _day(context) -> "datetime.date":
    return days_in_window(context.partition_time_window)[-1]


def _md_table(rows: dict[str, dict[str, float]]) -> str:
    names = sorted({m for r in rows.values() for m in r})
    cols = list(rows)
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for m in names:
        lines.append(f"| {m} | " + " | ".join(f"{rows[c].get(m, float('nan')):.4f}" for c in cols) + " |")
    return "\n".join(lines)


def candidate_version_asset(surface: str):
    @asset(
        key=AssetKey([surface, "candidate_version"]),
        deps=[AssetKey([surface, "finetuned_model"])],
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=surface,
        retry_policy=S3_RETRY,
        description=f"The fine-tuned {surface} model published as an immutable version: model.pt, a tuned faiss "
                    "index, item_ids.npy and the manifest (written last) under versions/{surface}/{version}/ in S3.",
    )
    def candidate_version(context: AssetExecutionContext, lake: DataLakeResource, s3: S3Resource) -> MaterializeResult:
        from serving.publish import publish_model
        from serving.registry import sha256_file
        from training.train import load_model

        state, registry, day = lifecycle_state(lake), s3.registry(), _day(context)
        finetune = state.read("finetune", surface, day)
        model_sha = sha256_file(Path(finetune["path"]) / "model.pt")
        previous = state.path("candidate", surface, day)
        if previous.exists():  # idempotent re-run: same fine-tuned weights, same version
            done = state.read("candidate", surface, day)
            if done.get("model_sha256") == model_sha and done["version"] in registry.list_versions(surface):
                context.log.info(f"{surface}/{done['version']} already published from these weights")
                return MaterializeResult(metadata={"version": done["version"], "reused": True,
                                                   "uri": MetadataValue.url(done["uri"])})
        champion = registry.champion(surface)
        version, tuned = publish_model(
            registry, surface, load_model(finetune["path"]),
            metrics={"partition": day.isoformat()},
            data_partitions=finetune["train_days"],
            config={"finetune_run": finetune["path"], "pretrained_run": finetune["pretrained"]},
            parents=[champion] if champion else [],
            created_at=datetime.combine(day + timedelta(days=1), time(2), tzinfo=timezone.utc),
        )
        uri = s3.uri("versions", surface, version, "")
        state.write({"version": version, "uri": uri, "model_sha256": model_sha}, "candidate", surface, day)
        return MaterializeResult(metadata={
            "version": version, "uri": MetadataValue.url(uri), "parent": champion or "none",
            "index_kind": tuned.kind, "index_params": MetadataValue.json(tuned.params),
            "index_recall_at_100": tuned.recall_at_100, "data_partitions": MetadataValue.json(finetune["train_days"]),
        })

    return candidate_version


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

        state, registry, day = lifecycle_state(lake), s3.registry(), _day(context)
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


def champion_asset(surface: str):
    @asset(
        key=AssetKey([surface, "champion"]),
        deps=[AssetKey([surface, "canary_evaluation"])],
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=surface,
        retry_policy=S3_RETRY,
        description=f"Promotion: champion.json of {surface} points at the candidate that passed the canary gate.",
    )
    def champion(context: AssetExecutionContext, lake: DataLakeResource, s3: S3Resource) -> MaterializeResult:
        state, registry, day = lifecycle_state(lake), s3.registry(), _day(context)
        canary = state.read("canary", surface, day)
        candidate = state.read("candidate", surface, day)["version"]
        if canary["candidate"] != candidate:
            raise RuntimeError(f"the canary verdict of {surface} on {day} is for {canary['candidate']}, but the "
                               f"current candidate is {candidate}: re-run {surface}/canary_evaluation; not promoting")
        if not canary.get("passed"):
            raise RuntimeError(f"{surface}/{canary['candidate']} has not passed the canary gate; not promoting")
        before = registry.champion(surface)
        pointer = registry.promote(surface, canary["candidate"]) if before != canary["candidate"] else {"version": before}
        state.write({"version": canary["candidate"], "previous": before}, "promotion", surface, day)
        return MaterializeResult(metadata={
            "champion": canary["candidate"], "previous_champion": before or "none",
            "changed": before != canary["candidate"],
            "pointer": MetadataValue.url(s3.uri("serving", surface, "champion.json")),
            "rollback": f"python -m serving.cli rollback {surface}",
            "previous_versions": MetadataValue.json(pointer.get("previous", [])),
        })

    return champion
