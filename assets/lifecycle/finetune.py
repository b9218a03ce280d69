"""Per surface: the pretrained model fine-tuned on that surface's targets of the days before the
partition's day, its impressed-but-not-engaged items as hard negatives."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.days import partition_day
from assets.lifecycle.pretrain import TRAINING_CODE, ranking_metadata
from assets.lifecycle.surface_asset import surface_asset
from assets.metadata import config_tag, training_run_metadata
from assets.records import FinetuneRecord
from assets.resources import (
    DataLakeResource,
    TrainingResource,
    VocabularyResource,
)
from assets.state import PretrainedModels, lifecycle_state


def finetuned_model_asset(surface: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "finetuned_model",
        partitions=partitions,
        deps=["pretrained_model", "online_features"],
        pool="training",
        kinds={"pytorch", "lightning"},
        code_version=TRAINING_CODE,
        description=f"The pretrained model fine-tuned on {surface} for the partition's day D: {surface}'s targets of "
        "the days before D, impressed-but-not-engaged items as hard negatives (a log without impressions: "
        "in-batch and uniform negatives only), starting from the newest pretrained model that trained "
        "only on days before D.",
    )
    def finetuned_model(
        context: dg.AssetExecutionContext,
        lake: DataLakeResource,
        training: TrainingResource,
        vocabulary: VocabularyResource,
    ) -> dg.MaterializeResult:
        from training.train import fine_tune

        table, state = lake.table(), lifecycle_state(lake)
        day = partition_day(context)
        pretrained = PretrainedModels(state).before(day)
        if pretrained is None:
            raise dg.Failure(
                f"no pretrained model trained only on days before {day}: fine-tuning {surface} for {day} from a "
                f"model that saw {day} or later would leak the canary day. Run the retrain job for {day} (it "
                "pretrains on the days before it) or an earlier day first."
            )
        train_days = [d for d in table.days() if day - timedelta(days=training.plan.finetune_days) <= d < day]
        if not train_days:
            raise dg.Failure(f"no ingested days before {day} to fine-tune {surface} on")
        events = pd.concat([table.read_day(d) for d in train_days], ignore_index=True)
        vocab = vocabulary.load()
        _, data_cfg, loss_cfg, train_cfg = training.configs(codes=vocab.codes)
        train_cfg = training.training_plan().finetune_train_config(train_cfg)
        optim_cfg = training.optim_config("finetune")
        # hard negatives are impressions without an engagement: a log without impressions has none,
        # and the loss keeps its in-batch and uniform negatives (sampled softmax) or every item
        n_hard = training.plan.hard_negatives if vocab.impression is not None else 0
        if n_hard != training.plan.hard_negatives:
            context.log.info(
                f"the vocabulary {vocab.label} has no impression outcome: fine-tuning {surface} without "
                "hard negatives (in-batch and uniform negatives)"
            )
        tag = config_tag(pretrained["path"], data_cfg, loss_cfg, train_cfg, training.ranking_config(), optim_cfg)
        out_dir = Path(training.models_dir) / surface / f"{day}-{tag}"
        result = fine_tune(
            events,
            surface,
            pretrained["path"],
            out_dir,
            data_cfg,
            loss_cfg,
            optim_cfg,
            train_cfg,
            n_hard=n_hard,
            rank_cfg=training.ranking_config(),
        )
        for note in result.run_size:
            context.log.info(f"{surface}: training plan: {note}")
        if result.ranking.get("reason") and result.ranking["reason"] != "the model has no ranking head":
            context.log.info(f"{surface}: ranking head: {result.ranking['reason']}")
        state.save(
            FinetuneRecord(
                path=str(out_dir),
                train_days=[d.isoformat() for d in train_days],
                pretrained=pretrained["path"],
                pretrained_through=pretrained["through"],
            ),
            surface,
            day,
        )
        return dg.MaterializeResult(
            metadata={
                **training_run_metadata(result, train_days, len(events)),
                "hard_negatives": n_hard,
                **ranking_metadata(result),
                "pretrained_through": pretrained["through"],
                "pretrained_run": dg.MetadataValue.path(pretrained["path"]),
            }
        )

    return finetuned_model
