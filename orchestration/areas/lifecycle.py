"""Lifecycle area: pretraining, and per surface fine-tuning, publication, canary and promotion;
the retrain job, its weekly schedule and the drift sensor."""

import dagster as dg

from assets.publication import candidate_version_asset, canary_evaluation_asset, canary_gate_check, champion_asset
from assets.training import finetuned_model_asset, pretrained_model
from orchestration.jobs import SURFACES, retrain, weekly_retrain_schedule
from orchestration.sensors import outcome_drift_sensor

defs = dg.Definitions(
    assets=[pretrained_model]
    + [make(surface) for surface in SURFACES
       for make in (finetuned_model_asset, candidate_version_asset, canary_evaluation_asset, champion_asset)],
    asset_checks=[canary_gate_check(surface) for surface in SURFACES],
    jobs=[retrain],
    schedules=[weekly_retrain_schedule],
    sensors=[outcome_drift_sensor],
)
