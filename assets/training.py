"""Training: the pretrained model (all surfaces' engagements) and one fine-tuned model per
surface (that surface's targets, its non-engaged impressions as hard negatives)."""

import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, BackfillPolicy, MaterializeResult, MetadataValue, asset

from assets.days import days_in_window
from assets.plots import line_chart
from assets.state import LifecycleState
from orchestration.partitions import daily_partitions
from orchestration.resources import DataLakeResource, TrainingResource


def lifecycle_state(lake: DataLakeResource) -> LifecycleState:
    return LifecycleState(Path(lake.root).parent / "lifecycle")


def _config_tag(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _training_metadata(result, days: list, n_events: int) -> dict:
    """What an operator wants to see of a training run: time, size, data window, loss curve."""
    meta = {
        "train_seconds": round(result.train_seconds, 1),
        "epochs": result.epochs,
        "n_items": result.model.cfg.n_items,
        "events": n_events,
        "data_window": f"{days[0]} .. {days[-1]} ({len(days)} days)",
        "run_dir": MetadataValue.path(str(result.out_dir)),
    }
    logs = sorted(Path(result.out_dir).rglob("metrics.csv"))
    if logs:
        log = pd.read_csv(logs[-1])
        loss_cols = [c for c in log.columns if c.startswith("train/loss")]
        if loss_cols:
            curve = log[["step", loss_cols[0]]].dropna()
            if len(curve) > 1:
                meta["loss_curve"] = line_chart({"train loss": curve[loss_cols[0]].tolist()}, curve["step"].tolist(),
                                                "training loss", "loss")
                meta["final_loss"] = float(curve[loss_cols[0]].iloc[-1])
    return meta


@asset(
    deps=["events"],
    group_name="training",
    pool="training",
    description="PinRec pretrained on every surface's engagements of all ingested days but the newest "
                "(held out for the canary). Weekly, or when the drift sensor asks for a retrain.",
)
def pretrained_model(context: AssetExecutionContext, lake: DataLakeResource, training: TrainingResource) -> MaterializeResult:
    from training.train import pretrain

    table = lake.table()
    days = table.days()
    if not days:
        raise RuntimeError("no events ingested yet: materialize the events asset first")
    train_days = days[:-1] or days
    events = table.read_until(train_days[-1])
    model_cfg, data_cfg, loss_cfg, train_cfg = training.configs()
    tag = _config_tag(model_cfg, data_cfg, loss_cfg, train_cfg, len(train_days))
    out_dir = Path(training.models_dir) / "pretrained" / f"{train_days[-1]}-{tag}"
    context.log.info(f"pretraining on {len(events)} events of {len(train_days)} days into {out_dir}")
    result = pretrain(events, out_dir, model_cfg, data_cfg, loss_cfg, train_cfg=train_cfg)
    lifecycle_state(lake).write({"path": str(out_dir), "days": [d.isoformat() for d in train_days]}, "pretrained")
    return MaterializeResult(metadata=_training_metadata(result, train_days, len(events)))


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
        tag = _config_tag(pretrained["path"], data_cfg, loss_cfg, train_cfg)
        out_dir = Path(training.models_dir) / surface / f"{day}-{tag}"
        result = fine_tune(events, surface, pretrained["path"], out_dir, data_cfg, loss_cfg, train_cfg=train_cfg,
                           n_hard=training.hard_negatives)
        state.write({"path": str(out_dir), "train_days": [d.isoformat() for d in train_days],
                     "pretrained": pretrained["path"]}, "finetune", surface, day)
        return MaterializeResult(metadata=_training_metadata(result, train_days, len(events)))

    return finetuned_model
