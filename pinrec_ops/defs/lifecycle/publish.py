"""Per surface: publish the fine-tuned model as an immutable version in S3 (model.pt, a tuned faiss
index, item_ids.npy, the manifest written last)."""

from datetime import datetime, time, timedelta, timezone
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pinrec_ops.defs.config import SETTINGS
from pinrec_ops.defs.days import partition_day
from pinrec_ops.defs.partitions import daily_partitions
from pinrec_ops.defs.policies import S3_RETRY
from pinrec_ops.defs.resources import DataLakeResource, S3Resource
from pinrec_ops.defs.state import lifecycle_state


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

        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
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


candidate_versions = [candidate_version_asset(surface) for surface in SETTINGS.surfaces]
