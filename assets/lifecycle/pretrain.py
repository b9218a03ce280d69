"""Pretraining: PinRec on every surface's engagements of the days before the held-out day.

In a run of the `retrain` job for day D the held-out day is D (the canary day); materialized
alone, it is the newest ingested day. Every pretrained model is recorded by the last day it
trained on (`state.PretrainedModels`), so fine-tuning for an older day can use an older model."""

from datetime import date
from pathlib import Path

import dagster as dg

from assets.conventions import area_tags, code_version, owners
from assets.metadata import config_tag, training_run_metadata
from assets.resources import (
    DataLakeResource,
    TrainingResource,
    VocabularyResource,
)
from assets.state import PretrainedModels, lifecycle_state

TRAINING_CODE = code_version(
    __name__,
    "assets.lifecycle.finetune",
    "training.model",
    "training.item_embedding",
    "events.catalogue",
    "training.data",
    "training.loss",
    "training.module",
    "training.train",
    "training.plan",
)


def held_out_day(context, ingested: list[date]) -> date | None:
    """The run's partition (retrain job for day D), else the newest ingested day."""
    tag = context.run.tags.get("dagster/partition")
    if tag:
        return date.fromisoformat(tag)
    return ingested[-1] if len(ingested) > 1 else None


def pretrained_model_asset() -> dg.AssetsDefinition:
    """Pretraining (not partitioned: one model for every surface, recorded by its last day)."""

    @dg.asset(
        deps=["events"],
        group_name="training",
        pool="training",
        kinds={"pytorch", "lightning"},
        owners=owners("lifecycle"),
        tags=area_tags("lifecycle"),
        code_version=TRAINING_CODE,
        description="PinRec pretrained on every surface's engagements of the days before the held-out day (the run's "
        "partition in the retrain job, else the newest ingested day). Weekly, or when the drift sensor asks.",
    )
    def pretrained_model(
        context: dg.AssetExecutionContext,
        lake: DataLakeResource,
        training: TrainingResource,
        vocabulary: VocabularyResource,
    ) -> dg.MaterializeResult:
        from training.train import pretrain

        table = lake.table()
        ingested = table.days()
        if not ingested:
            raise dg.Failure("no events ingested yet: materialize the events asset first")
        held_out = held_out_day(context, ingested)
        train_days = [d for d in ingested if held_out is None or d < held_out]
        if not train_days:
            raise dg.Failure(f"no ingested day before {held_out} to pretrain on")
        events = table.read_until(train_days[-1])
        vocab = vocabulary.record()
        model_cfg, data_cfg, loss_cfg, train_cfg = training.configs(codes=vocab.codes)
        catalogue = vocab.catalogue  # item fields (events.catalogue); part of the tag only when there is one
        tag = config_tag(
            model_cfg,
            data_cfg,
            loss_cfg,
            train_cfg,
            len(train_days),
            training.ranking_config(),
            training.optim_config("pretrain"),
            *([catalogue.record()] if catalogue else []),
        )
        out_dir = Path(training.models_dir) / "pretrained" / f"{train_days[-1]}-{tag}"
        context.log.info(
            f"pretraining on {len(events)} events of {len(train_days)} days "
            f"({train_days[0]} .. {train_days[-1]}, {held_out} held out) into {out_dir}"
        )
        result = pretrain(
            events,
            out_dir,
            model_cfg,
            data_cfg,
            loss_cfg,
            training.optim_config("pretrain"),
            train_cfg,
            rank_cfg=training.ranking_config(),
            catalogue=catalogue,
        )
        for note in result.run_size:
            context.log.info(f"training plan: {note}")
        if result.ranking.get("reason"):
            context.log.info(f"ranking head: {result.ranking['reason']}")
        PretrainedModels(lifecycle_state(lake)).record(out_dir, train_days, held_out)
        return dg.MaterializeResult(
            metadata={
                **training_run_metadata(result, train_days, len(events)),
                "held_out_day": str(held_out),
                **ranking_metadata(result),
            }
        )

    return pretrained_model


def ranking_metadata(result) -> dict:
    """Whether the ranking head trained (slates, or why not): one model retrieves and ranks."""
    info = result.ranking
    return {
        "ranking_head": bool(info.get("ranking")),
        "ranking_slates": int(info.get("slates", 0)),
        "ranking_note": info.get("reason") or "trained on the log's slates and masked actions",
    }
