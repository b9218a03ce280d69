"""Per surface: promotion. champion.json points at the candidate of the partition's day once it
passed the canary gate; the previous champion stays in the pointer's rollback history.

The step decides from the gate's verdict (assets.lifecycle.verdicts): a refused candidate, or
one the registry refuses as stale (`Registry.promote`: never replace a champion trained on newer
data), is not promoted, the step succeeds without a materialization and the promotion record and
the run's tag say why. It fails only when something broke (S3, a verdict for another candidate)."""

from collections.abc import Iterator

import dagster as dg

from assets.days import partition_day
from assets.lifecycle.surface_asset import surface_asset
from assets.lifecycle.verdicts import judged_candidate, promote_or_not, promotion_code
from assets.resources import DataLakeResource, S3Resource
from assets.state import lifecycle_state


def champion_asset(surface: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "champion",
        partitions=partitions,
        deps=[dg.AssetKey([surface, "canary_evaluation"])],
        talks_to_s3=True,
        kinds={"s3"},
        code_version=promotion_code(__name__),
        description=f"Promotion: champion.json of {surface} points at the partition day's candidate once it passed "
        "the canary gate; a refused candidate is not promoted (no materialization, the run stays successful).",
        output_required=False,
    )
    def champion(
        context: dg.AssetExecutionContext, lake: DataLakeResource, s3: S3Resource
    ) -> Iterator[dg.MaterializeResult]:
        from serving.registry.comparable import comparable_champion

        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        candidate, canary = judged_candidate(state, surface, day, "promoting")
        before = registry.champion(surface)
        refused = None if canary.passed else (canary.reasons or ["the canary gate refused it"])[0]
        # a champion that cannot be compared (another deployment, vocabulary or item space) says
        # nothing about staleness either
        incomparable = before not in (None, candidate) and comparable_champion(registry, surface, candidate) is None
        pointer = promote_or_not(context, registry, state, surface, day, candidate, refused, allow_older=incomparable)
        if pointer is None:
            return
        yield dg.MaterializeResult(
            metadata={
                "day": day.isoformat(),
                "champion": candidate,
                "previous_champion": before or "none",
                "changed": int(before != candidate),
                "data_through": registry.data_through(surface, candidate) or "",
                "pointer": dg.MetadataValue.url(s3.uri("serving", surface, "champion.json")),
                "rollback": f"python -m serving.service.cli rollback {surface}",
                "previous_versions": dg.MetadataValue.json(pointer.get("previous", [])),
            }
        )

    return champion
