"""The lifecycle area's definitions for a deployment's settings: pretraining, and per surface of
the settings fine-tuning, publication, the canary evaluation and its gate, then promotion; with
the online canary (`settings.online_canary`) the release, the trial (until its decision) and its gate come
before promotion. Dagster loads them through `defs` (the defs folder), which reads the settings
from the environment then."""

import dagster as dg

from assets.config import Settings, load_settings
from assets.lifecycle.canary import canary_evaluation_asset, canary_gate_check
from assets.lifecycle.champion import champion_asset
from assets.lifecycle.finetune import finetuned_model_asset
from assets.lifecycle.online_canary import (
    canary_release_asset,
    canary_trial_asset,
    online_canary_gate_check,
    online_champion_asset,
)
from assets.lifecycle.pretrain import pretrained_model_asset
from assets.lifecycle.publish import candidate_version_asset
from assets.partitions import daily_partitions


def lifecycle_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings.start_date)
    assets, checks = [pretrained_model_asset()], []
    for surface in settings.surfaces:
        assets += [
            finetuned_model_asset(surface, partitions),
            candidate_version_asset(surface, partitions),
            canary_evaluation_asset(surface, partitions),
        ]
        checks.append(canary_gate_check(surface, settings.gate_baselines))
        if settings.online_canary:  # promotion after the online trial (lifecycle/online_canary.py)
            assets += [
                canary_release_asset(surface, partitions, settings.canary_traffic),
                canary_trial_asset(surface, partitions),
                online_champion_asset(surface, partitions),
            ]
            checks.append(online_canary_gate_check(surface))
        else:
            assets.append(champion_asset(surface, partitions))
    return dg.Definitions(assets=assets, asset_checks=checks)


@dg.definitions
def defs() -> dg.Definitions:
    return lifecycle_definitions(load_settings())
