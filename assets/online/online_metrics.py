"""Online metrics of one day, per surface and experiment arm, from the day's serving log:
impressions, clicks / saves / hides per 1,000 served impressions (with 95% bootstrap intervals
over users), distinct items, catalogue coverage, Gini of exposure, the canary's share. Numeric
metadata, so the UI plots each figure over days."""

import json

import dagster as dg

from assets.conventions import area_tags, code_version, owners
from assets.days import partition_day
from assets.metadata import table_metadata
from assets.policies import ONE_RUN_PER_DAY
from assets.resources import DataLakeResource, EventSourceResource
from assets.state import lifecycle_state
from events.serving_log import ServingLogTable
from monitoring.online import metrics_by
from storage.files import atomic_write_text

PLOTTED = ("saves_per_1k", "clicks_per_1k", "hides_per_1k", "coverage", "gini", "canary_share", "impressions")


def online_figures(lake_root, day, catalogue_size: int | None) -> dict:
    """{surface: {arm: figures}} and {surface: {served_by: figures}} of `day`'s serving log."""
    log = ServingLogTable(lake_root).read_day(day)
    size = catalogue_size or int(log["item_id"].nunique())
    by_arm, by_role = {}, {}
    for (surface, arm), figures in metrics_by(log, ("surface", "arm"), size).items():
        by_arm.setdefault(surface, {})[arm] = figures
    for (surface, role), figures in metrics_by(log, ("surface", "served_by"), size).items():
        by_role.setdefault(surface, {})[role] = figures
    return {"day": day.isoformat(), "catalogue_size": size, "by_arm": by_arm, "by_served_by": by_role}


def online_metrics_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The online metrics asset on the graph's day partitions."""

    @dg.asset(
        deps=["serving_log", "events"],
        partitions_def=partitions,
        backfill_policy=ONE_RUN_PER_DAY,
        group_name="online",
        kinds={"pandas"},
        owners=owners("lifecycle"),
        tags=area_tags("online"),
        code_version=code_version(__name__, "monitoring.online", "events.serving_log"),
        description="What users did with what was served on the day, per surface and experiment arm: engagements per "
        "1,000 served impressions with 95% bootstrap intervals over users, coverage, Gini of exposure, the "
        "canary's share.",
    )
    def online_metrics(
        context: dg.AssetExecutionContext, lake: DataLakeResource, event_source: EventSourceResource
    ) -> dg.MaterializeResult:
        day = partition_day(context)
        figures = online_figures(lake.root, day, event_source.catalogue_size())
        path = lifecycle_state(lake).path("online_metrics", "_all", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(figures, indent=2, sort_keys=True))
        metadata = {"day": day.isoformat(), "catalogue_size": figures["catalogue_size"]}
        rows = []
        for surface, arms in figures["by_arm"].items():
            for arm, f in arms.items():
                rows.append({"surface": surface, "arm": arm, **{k: f.get(k) for k in PLOTTED}})
                metadata.update({f"{surface}/{arm}/{k}": float(f[k]) for k in PLOTTED})
        metadata["by_arm"] = table_metadata(
            rows, {"surface": "string", "arm": "string", **{k: "float" for k in PLOTTED}}
        )
        if not rows:
            metadata["note"] = "no serving log for this day (an open-loop source serves nobody)"
        return dg.MaterializeResult(metadata=metadata)

    return online_metrics
