"""Per surface: promotion. champion.json points at the candidate that passed the canary gate."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pinrec_ops.defs.config import SETTINGS
from pinrec_ops.defs.days import partition_day
from pinrec_ops.defs.partitions import daily_partitions
from pinrec_ops.defs.policies import S3_RETRY
from pinrec_ops.defs.resources import DataLakeResource, S3Resource
from pinrec_ops.defs.state import lifecycle_state


def champion_asset(surface: str):
    @asset(
        key=AssetKey([surface, "champion"]),
        deps=[AssetKey([surface, "canary_evaluation"])],
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=surface,
        retry_policy=S3_RETRY,
        description=f"Promotion: champion.json of {surface} points at the candidate that passed the canary gate.",
    )
    def champion(context: AssetExecutionContext, lake: DataLakeResource, s3: S3Resource) -> MaterializeResult:
        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        canary = state.read("canary", surface, day)
        candidate = state.read("candidate", surface, day)["version"]
        if canary["candidate"] != candidate:
            raise RuntimeError(f"the canary verdict of {surface} on {day} is for {canary['candidate']}, but the "
                               f"current candidate is {candidate}: re-run {surface}/canary_evaluation; not promoting")
        if not canary.get("passed"):
            raise RuntimeError(f"{surface}/{canary['candidate']} has not passed the canary gate; not promoting")
        before = registry.champion(surface)
        pointer = registry.promote(surface, canary["candidate"]) if before != canary["candidate"] else {"version": before}
        state.write({"version": canary["candidate"], "previous": before}, "promotion", surface, day)
        return MaterializeResult(metadata={
            "champion": canary["candidate"], "previous_champion": before or "none",
            "changed": before != canary["candidate"],
            "pointer": MetadataValue.url(s3.uri("serving", surface, "champion.json")),
            "rollback": f"python -m serving.cli rollback {surface}",
            "previous_versions": MetadataValue.json(pointer.get("previous", [])),
        })

    return champion


champions = [champion_asset(surface) for surface in SETTINGS.surfaces]
