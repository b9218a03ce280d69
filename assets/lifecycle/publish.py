"""Per surface: the fine-tuned model of the partition's day published as an immutable version in
S3 (model.pt, a tuned faiss index, item_ids.npy, the manifest written last)."""

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import dagster as dg

from assets.conventions import code_version
from assets.days import partition_day
from assets.lifecycle.surface_asset import surface_asset
from assets.records import CandidateRecord, FinetuneRecord
from assets.resources import (
    DataLakeResource,
    FeastResource,
    S3Resource,
    VocabularyResource,
)
from assets.state import lifecycle_state

PUBLISH_CODE = code_version(__name__, "serving.registry.publish", "serving.registry.store", "serving.registry.index")


def _queries_of_recent_users(model, feast_settings, last_day: str, vocabulary, surface: str, limit: int = 300):
    """The model's queries for users active on its last training day (their sequences as the
    offline user_sequence table has them, the vocabulary's default weights of `surface`), for
    tuning the index on what serving will ask."""
    from datetime import date

    import pandas as pd

    from feature_pipeline.store import offline_table_path
    from serving.registry.publish import user_queries
    from serving.service.encoder import UserSequence

    path = offline_table_path(feast_settings, "user_sequence", date.fromisoformat(last_day))
    if not path.exists():
        return None
    rows = pd.read_parquet(path).head(limit).to_dict("records")
    codes = vocabulary.codes.for_model(model.cfg.outcomes, model.cfg.surfaces)
    return user_queries(
        model,
        [UserSequence.from_features(r) for r in rows],
        vocabulary.weights_for(surface),
        engaged_codes=codes.engaged_codes,
    )


def candidate_version_asset(surface: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "candidate_version",
        partitions=partitions,
        deps=[dg.AssetKey([surface, "finetuned_model"])],
        talks_to_s3=True,
        kinds={"faiss", "s3"},
        code_version=PUBLISH_CODE,
        description=f"The {surface} model fine-tuned for the partition's day, published as an immutable version: "
        "model.pt, a tuned faiss index, item_ids.npy and the manifest (written last) under "
        f"versions/{surface}/<version>/ in S3.",
    )
    def candidate_version(
        context: dg.AssetExecutionContext,
        lake: DataLakeResource,
        s3: S3Resource,
        feast: FeastResource,
        vocabulary: VocabularyResource,
    ) -> dg.MaterializeResult:
        from serving.registry.manifest import sha256_file
        from serving.registry.publish import publish_model
        from training.train import load_model

        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        finetune = state.load(FinetuneRecord, surface, day)
        model_sha = sha256_file(Path(finetune.path) / "model.pt")
        common = {"day": day.isoformat(), "data_through": max(finetune.train_days)}
        if state.has(CandidateRecord, surface, day):  # idempotent re-run: same fine-tuned weights, same version
            done = state.load(CandidateRecord, surface, day)
            if done.model_sha256 == model_sha and done.version in registry.list_versions(surface):
                context.log.info(f"{surface}/{done.version} already published from these weights")
                return dg.MaterializeResult(
                    metadata={
                        **common,
                        "version": done.version,
                        "reused": True,
                        "uri": dg.MetadataValue.url(done.uri),
                    }
                )
        champion = registry.champion(surface)
        model = load_model(finetune.path)
        vocab = vocabulary.load()
        tune_queries = _queries_of_recent_users(model, feast.settings(), max(finetune.train_days), vocab, surface)
        version, tuned = publish_model(
            registry,
            surface,
            model,
            metrics={"partition": day.isoformat()},
            data_partitions=finetune.train_days,
            config={
                "finetune_run": finetune.path,
                "pretrained_run": finetune.pretrained,
                "deployment": s3.deployment,  # a champion of another deployment is never compared
            },
            parents=[champion] if champion else [],
            created_at=datetime.combine(day + timedelta(days=1), time(2), tzinfo=UTC),
            tune_queries=tune_queries,
            vocabulary=vocab,  # default weights of the surface; the codes go into the manifest
        )
        uri = s3.uri("versions", surface, version, "")
        state.save(CandidateRecord(version=version, uri=uri, model_sha256=model_sha), surface, day)
        return dg.MaterializeResult(
            metadata={
                **common,
                "version": version,
                "reused": False,
                "uri": dg.MetadataValue.url(uri),
                "parent": champion or "none",
                "n_items": int(model.cfg.n_items),
                "index_kind": tuned.kind,
                "index_params": dg.MetadataValue.json(tuned.params),
                "index_recall_at_100": float(tuned.recall_at_100),
                "index_tuned_on": "recent users' queries" if tune_queries is not None else "item vectors plus noise",
                "data_partitions": dg.MetadataValue.json(finetune.train_days),
            }
        )

    return candidate_version
