"""Pretraining: PinRec on every surface's engagements (the newest day held out for the canary)."""

from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, asset

from pinrec_ops.defs.metadata import config_tag, training_run_metadata
from pinrec_ops.defs.resources import DataLakeResource, TrainingResource
from pinrec_ops.defs.state import lifecycle_state


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
    tag = config_tag(model_cfg, data_cfg, loss_cfg, train_cfg, len(train_days))
    out_dir = Path(training.models_dir) / "pretrained" / f"{train_days[-1]}-{tag}"
    context.log.info(f"pretraining on {len(events)} events of {len(train_days)} days into {out_dir}")
    result = pretrain(events, out_dir, model_cfg, data_cfg, loss_cfg, train_cfg=train_cfg)
    lifecycle_state(lake).write({"path": str(out_dir), "days": [d.isoformat() for d in train_days]}, "pretrained")
    return MaterializeResult(metadata=training_run_metadata(result, train_days, len(events)))
