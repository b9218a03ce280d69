"""Per surface: promotion. champion.json points at the candidate of the partition's day once it
passed the canary gate; the previous champion stays in the pointer's rollback history."""

import dagster as dg

from assets.config import SETTINGS
from assets.conventions import code_version
from assets.days import partition_day
from assets.lifecycle.canary import version_data_through
from assets.lifecycle.surface_asset import surface_asset
from assets.resources import DataLakeResource, S3Resource
from assets.state import lifecycle_state


def champion_asset(surface: str) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "champion",
        deps=[dg.AssetKey([surface, "canary_evaluation"])],
        talks_to_s3=True,
        kinds={"s3"},
        code_version=code_version("serving.registry.store"),
        description=f"Promotion: champion.json of {surface} points at the partition day's candidate, which passed "
        "the canary gate.",
    )
    def champion(context: dg.AssetExecutionContext, lake: DataLakeResource, s3: S3Resource) -> dg.MaterializeResult:
        from serving.registry.comparable import comparable_champion

        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        canary = state.read("canary", surface, day)
        candidate = state.read("candidate", surface, day)["version"]
        if canary["candidate"] != candidate:
            raise dg.Failure(
                f"the canary verdict of {surface} on {day} is for {canary['candidate']}, but the "
                f"current candidate is {candidate}: re-run {surface}/canary_evaluation; not promoting"
            )
        if not canary.get("passed"):
            raise dg.Failure(f"{surface}/{canary['candidate']} has not passed the canary gate; not promoting")
        before = registry.champion(surface)
        # The champion may have changed since the gate ran (another run promoted): never replace a
        # model trained on newer data than this candidate's.
        ours, theirs = (
            version_data_through(registry, surface, candidate),
            version_data_through(registry, surface, comparable_champion(registry, surface, candidate)),
        )
        if before not in (None, candidate) and ours and theirs and ours < theirs:
            raise dg.Failure(
                f"not promoting {surface}/{candidate} (data through {ours}): the champion {before} "
                f"trained on newer data (through {theirs})"
            )
        pointer = registry.promote(surface, candidate) if before != candidate else {"version": before}
        state.write({"version": candidate, "previous": before}, "promotion", surface, day)
        return dg.MaterializeResult(
            metadata={
                "day": day.isoformat(),
                "champion": candidate,
                "previous_champion": before or "none",
                "changed": int(before != candidate),
                "data_through": ours or "",
                "pointer": dg.MetadataValue.url(s3.uri("serving", surface, "champion.json")),
                "rollback": f"python -m serving.service.cli rollback {surface}",
                "previous_versions": dg.MetadataValue.json(pointer.get("previous", [])),
            }
        )

    return champion


if SETTINGS.online_canary:  # promotion after the online trial (lifecycle/online_canary.py)
    from assets.lifecycle.online_canary import online_champion_asset

    champions = [online_champion_asset(surface) for surface in SETTINGS.surfaces]
else:
    champions = [champion_asset(surface) for surface in SETTINGS.surfaces]
