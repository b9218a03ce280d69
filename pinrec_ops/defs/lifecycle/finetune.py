"""Per surface: the pretrained model fine-tuned on that surface's targets of the days before the
partition's day, its impressed-but-not-engaged items as hard negatives."""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from pinrec_ops.defs.config import SETTINGS
from pinrec_ops.defs.days import partition_day
from pinrec_ops.defs.lifecycle.pretrain import TRAINING_CODE
from pinrec_ops.defs.lifecycle.surface_asset import surface_asset
from pinrec_ops.defs.metadata import config_tag, training_run_metadata
from pinrec_ops.defs.resources import DataLakeResource, TrainingResource
from pinrec_ops.defs.state import PretrainedModels, lifecycle_state


def finetuned_model_asset(surface: str) -> dg.AssetsDefinition:
    @surface_asset(
        surface, "finetuned_model",
        deps=["pretrained_model", "online_features"],
        pool="training",
        kinds={"pytorch", "lightning"},
        code_version=TRAINING_CODE,
        description=f"The pretrained model fine-tuned on {surface} for the partition's day D: {surface}'s targets of "
                    "the days before D, impressed-but-not-engaged items as hard negatives, starting from the newest "
                    "pretrained model that trained only on days before D.",
    )
    def finetuned_model(context: dg.AssetExecutionContext, lake: DataLakeResource,
                        training: TrainingResource) -> dg.MaterializeResult:
        from training.train import fine_tune

        table, state = lake.table(), lifecycle_state(lake)
        day = partition_day(context)
        pretrained = PretrainedModels(state).before(day)
        if pretrained is None:
            raise dg.Failure(
                f"no pretrained model trained only on days before {day}: fine-tuning {surface} for {day} from a "
                f"model that saw {day} or later would leak the canary day. Run the retrain job for {day} (it "
                "pretrains on the days before it) or an earlier day first.")
        train_days = [d for d in table.days() if day - timedelta(days=training.finetune_days) <= d < day]
        if not train_days:
            raise dg.Failure(f"no ingested days before {day} to fine-tune {surface} on")
        events = pd.concat([table.read_day(d) for d in train_days], ignore_index=True)
        _, data_cfg, loss_cfg, train_cfg = training.configs()
        train_cfg = replace(train_cfg, max_epochs=training.finetune_epochs)
        tag = config_tag(pretrained["path"], data_cfg, loss_cfg, train_cfg)
        out_dir = Path(training.models_dir) / surface / f"{day}-{tag}"
        result = fine_tune(events, surface, pretrained["path"], out_dir, data_cfg, loss_cfg, train_cfg=train_cfg,
                           n_hard=training.hard_negatives)
        state.write({"path": str(out_dir), "train_days": [d.isoformat() for d in train_days],
                     "pretrained": pretrained["path"], "pretrained_through": pretrained["through"]},
                    "finetune", surface, day)
        return dg.MaterializeResult(metadata={**training_run_metadata(result, train_days, len(events)),
                                              "pretrained_through": pretrained["through"],
                                              "pretrained_run": dg.MetadataValue.path(pretrained["path"])})

    return finetuned_model


finetuned_models = [finetuned_model_asset(surface) for surface in SETTINGS.surfaces]
