"""Per surface: the pretrained model fine-tuned on that surface's targets, its impressed-but-not-
engaged items as hard negatives."""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    asset,
)

from pinrec_ops.defs.config import SETTINGS
from pinrec_ops.defs.days import days_in_window
from pinrec_ops.defs.metadata import config_tag, training_run_metadata
from pinrec_ops.defs.partitions import daily_partitions
from pinrec_ops.defs.resources import DataLakeResource, TrainingResource
from pinrec_ops.defs.state import lifecycle_state


def finetuned_model_asset(surface: str):
    @asset(
        key=AssetKey([surface, "finetuned_model"]),
        deps=["pretrained_model", "online_features"],
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=surface,
        pool="training",
        description=f"The pretrained model fine-tuned on {surface}: targets on {surface} in the days before the "
                    "partition's day, impressed-but-not-engaged items as hard negatives.",
    )
    def finetuned_model(context: AssetExecutionContext, lake: DataLakeResource, training: TrainingResource) -> MaterializeResult:
        from training.train import fine_tune

        table, state = lake.table(), lifecycle_state(lake)
        day = days_in_window(context.partition_time_window)[-1]
        train_days = [d for d in table.days() if day - timedelta(days=training.finetune_days) <= d < day]
        if not train_days:
            raise RuntimeError(f"no ingested days before {day} to fine-tune {surface} on")
        pretrained = state.read("pretrained")
        events = pd.concat([table.read_day(d) for d in train_days], ignore_index=True)
        _, data_cfg, loss_cfg, train_cfg = training.configs()
        train_cfg = replace(train_cfg, max_epochs=training.finetune_epochs)
        tag = config_tag(pretrained["path"], data_cfg, loss_cfg, train_cfg)
        out_dir = Path(training.models_dir) / surface / f"{day}-{tag}"
        result = fine_tune(events, surface, pretrained["path"], out_dir, data_cfg, loss_cfg, train_cfg=train_cfg,
                           n_hard=training.hard_negatives)
        state.write({"path": str(out_dir), "train_days": [d.isoformat() for d in train_days],
                     "pretrained": pretrained["path"]}, "finetune", surface, day)
        return MaterializeResult(metadata=training_run_metadata(result, train_days, len(events)))

    return finetuned_model


finetuned_models = [finetuned_model_asset(surface) for surface in SETTINGS.surfaces]
