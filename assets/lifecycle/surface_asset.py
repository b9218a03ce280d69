"""The one decorator of a per-surface lifecycle asset: key `<surface>/<step>`, the graph's day
partitions (one run per day), the surface's group, the lifecycle's owner and area tags."""

import dagster as dg

from assets.conventions import area_tags, owners
from assets.policies import ONE_RUN_PER_DAY, S3_RETRY


def surface_asset(
    surface: str,
    step: str,
    *,
    partitions: dg.PartitionsDefinition,
    deps: list,
    kinds: set[str],
    code_version: str,
    description: str,
    talks_to_s3: bool = False,
    pool: str | None = None,
    output_required: bool = True,
):
    """`@dg.asset` for step `step` of `surface` on the day partitions `partitions` (S3 steps retry
    with backoff); with
    `output_required=False` the step may decide not to materialize (a generator that yields
    nothing: a promotion the verdict refused)."""
    return dg.asset(
        key=dg.AssetKey([surface, step]),
        deps=deps,
        partitions_def=partitions,
        backfill_policy=ONE_RUN_PER_DAY,
        group_name=surface,
        retry_policy=S3_RETRY if talks_to_s3 else None,
        pool=pool,
        output_required=output_required,
        kinds=kinds,
        owners=owners("lifecycle"),
        tags=area_tags("lifecycle", surface=surface),
        code_version=code_version,
        description=description,
    )
