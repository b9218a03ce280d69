"""The online canary stage (PINREC_ONLINE_CANARY=1): a candidate that passes the offline gate is
released as the canary for the next day (canary.json, a hashed share of users); the day after,
its online figures against the champion's, each on its own users, decide its promotion.

    canary_evaluation[D] --canary_gate--> canary_release[D]   canary for day D+1 (or the first champion)
    online_metrics[D] --> canary_trial[D] --online_canary_gate--> champion[D]   promote yesterday's canary

`canary_trial[D]` ends the trial of the canary released on D-1 (canary.json is cleared if it still
names it, whichever of the two chains runs first), so a canary that loses serves one day only:
that is the rollback. The gate judges engagements (clicks + saves) per 1,000 served impressions
of the canary's users against the champion's, with a 95% bootstrap interval over users, and
fails a canary that no longer passes its load check (`serving.service.checks.check_version` on what is in
S3 now: an object damaged since its release), so promotion never names a version that cannot
load."""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
from pydantic import Field

from assets.conventions import code_version
from assets.days import partition_day
from assets.lifecycle.surface_asset import surface_asset
from assets.lifecycle.verdicts import judged_candidate, promote_or_not, promotion_code, tag_run, verdict_result
from assets.records import PromotionRecord, ReleaseRecord, TrialRecord
from assets.resources import DataLakeResource, S3Resource
from assets.state import lifecycle_state
from events.serving_log import ServingLogTable
from monitoring.online import compare_groups
from serving.evaluation.gate import OnlinePolicy, Verdict, online_gate_rules


class OnlineGateConfig(dg.Config):
    tolerance: float = Field(
        default=OnlinePolicy.tolerance,
        description="Largest relative drop of the canary's engagements per 1,000 impressions below the champion's.",
    )
    min_users: int = Field(
        default=OnlinePolicy.min_users, description="Fewest canary users (and champion users) to judge a trial."
    )


def canary_release_asset(surface: str, partitions: dg.PartitionsDefinition, traffic: float) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "canary_release",
        partitions=partitions,
        deps=[dg.AssetKey([surface, "canary_evaluation"])],
        talks_to_s3=True,
        kinds={"s3"},
        code_version=code_version(__name__, "serving.registry.store"),
        description=f"The {surface} candidate of day D, past the offline gate, serves the canary share of users on "
        "day D+1 (canary.json); with no champion yet it becomes the champion directly. A champion that "
        "does not load (the canary evaluation found it damaged beyond repair) is first rolled back to "
        "the newest earlier champion that loads; with none, the candidate becomes the champion. A "
        "candidate the gate refused is not released (no materialization; the run stays successful).",
        output_required=False,
    )
    def canary_release(
        context: dg.AssetExecutionContext, lake: DataLakeResource, s3: S3Resource
    ) -> Iterator[dg.MaterializeResult]:
        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        candidate, canary = judged_candidate(state, surface, day, "releasing")
        if not canary.passed:  # a verdict: nothing to release, nothing broke
            tag_run(context, surface, f"not promoted: {(canary.reasons or ['refused'])[0]}")
            return
        champion = registry.champion(surface)
        broken = canary.unloadable.get("champion")
        restored = _roll_back_to_a_loadable_champion(registry, surface) if champion and broken else None
        if champion is None:
            registry.promote(surface, candidate)
            action = "promoted (first champion)"
        elif broken and restored is None:  # an unloadable champion is replaced, newer data or not
            registry.promote(surface, candidate, allow_older=True)
            action = f"promoted (the champion {champion} does not load and no earlier champion does: {broken})"
        else:
            registry.set_canary(surface, candidate, traffic)
            action = f"canary for {day + timedelta(days=1)}"
            if restored:
                action += f" (the champion {champion} does not load: rolled back to {restored})"
        state.save(
            ReleaseRecord(
                version=candidate,
                action=action,
                released_for=(day + timedelta(days=1)).isoformat(),
                traffic=traffic,
                champion=champion,
            ),
            surface,
            day,
        )
        yield dg.MaterializeResult(
            metadata={
                "day": day.isoformat(),
                "version": candidate,
                "action": action,
                "traffic": traffic,
                "champion": champion or "none",
            }
        )

    return canary_release


def _roll_back_to_a_loadable_champion(registry, surface: str) -> str | None:
    """The newest earlier champion that passes its load check becomes the champion again (what
    every serving process falls back to anyway); None when there is none."""
    from serving.registry.manifest import RegistryError

    pointer = registry.read_pointer(surface, "champion") or {}
    for earlier in pointer.get("previous", []):
        try:
            registry.rollback(surface, to=earlier)  # checks that it loads first
            return earlier
        except RegistryError:
            continue
    return None


def canary_trial_asset(surface: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "canary_trial",
        partitions=partitions,
        deps=["online_metrics"],
        talks_to_s3=True,
        kinds={"s3", "pandas"},
        code_version=code_version(__name__, "monitoring.online"),
        description=f"The one-day trial of the {surface} canary that served day D: its users' engagements per 1,000 "
        "served impressions against the champion's users', with a 95% bootstrap interval; the trial "
        "ends (canary.json cleared if it still names the canary).",
    )
    def canary_trial(context: dg.AssetExecutionContext, lake: DataLakeResource, s3: S3Resource) -> dg.MaterializeResult:
        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        previous = day - timedelta(days=1)
        released = state.load(ReleaseRecord, surface, previous) if state.has(ReleaseRecord, surface, previous) else None
        trial = released.version if released and released.action.startswith("canary") else None
        if trial is None:
            state.save(TrialRecord(version=None, day=day.isoformat()), surface, day)
            return dg.MaterializeResult(metadata={"day": day.isoformat(), "canary": "none served on this day"})
        log = ServingLogTable(lake.root).read_day(day)
        log = log[log["surface"] == surface]
        canary_rows = log[(log["served_by"] == "canary") & (log["version"] == trial)]
        champion_rows = log[log["served_by"] == "champion"]
        comparison = compare_groups(champion_rows, canary_rows)
        from serving.registry.manifest import RegistryError
        from serving.service.checks import check_version

        load_error = None
        try:  # the version must still load as it is in S3 now (an object may have been damaged since)
            check_version(registry, surface, trial)
        except RegistryError as exc:  # LoadCheckError, IntegrityError, a missing version: the trial is lost
            load_error = str(exc)
            context.log.warning(f"{surface}/canary_trial on {day}: the canary {trial} does not load: {exc}")
        current = registry.canary(surface)
        if current and current[0] == trial:
            registry.clear_canary(surface)  # the trial is over, won or lost
        state.save(
            TrialRecord(
                version=trial,
                day=day.isoformat(),
                champion=registry.champion(surface),
                comparison=comparison.to_dict(),
                load_error=load_error,
            ),
            surface,
            day,
        )
        return dg.MaterializeResult(
            metadata={
                "day": day.isoformat(),
                "canary": trial,
                **{f"trial/{k}": v for k, v in comparison.to_dict().items() if isinstance(v, (int, float))},
                **({"canary_does_not_load": load_error} if load_error else {}),
            }
        )

    return canary_trial


def online_canary_gate_check(surface: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey([surface, "canary_trial"]),
        name="online_canary_gate",
        blocking=True,
        description="The online verdict on the canary (serving.evaluation.gate.online_gate_rules): enough users on "
        "both sides, its users' engagements per 1,000 served impressions not worse than the champion's "
        "users' beyond the tolerance and not significantly worse (the 95% interval of the difference "
        "reaches 0), and it still loads. A refusal fails this check with WARN severity and leaves the run "
        "successful: the champion step reads the verdict and promotes nothing. Passes with nothing to "
        "promote when no canary served.",
    )
    def online_canary_gate(
        context: dg.AssetCheckExecutionContext, config: OnlineGateConfig, lake: DataLakeResource
    ) -> dg.AssetCheckResult:
        day = partition_day(context.op_execution_context)
        state = lifecycle_state(lake)
        trial = state.load(TrialRecord, surface, day)
        if trial.version is None:
            state.save(trial.but(passed=True), surface, day)
            return dg.AssetCheckResult(
                passed=True,
                description=f"no canary served on {day}: nothing to promote",
                metadata={"canary": "none", "verdict": "nothing to promote"},
            )
        c = trial.comparison
        rules = online_gate_rules(c, OnlinePolicy(tolerance=config.tolerance, min_users=config.min_users))
        load = [f"the canary {trial.version} does not load: {trial.load_error}"] if trial.load_error else []
        verdict = Verdict.of(rules, *load)
        state.save(trial.but(passed=verdict.passed, reasons=list(verdict.reasons)), surface, day)
        return verdict_result(
            context,
            surface,
            verdict,
            rules,
            f"canary {trial.version} wins its trial: {c['b']:.2f} vs {c['a']:.2f} {c['metric']}"
            if verdict.passed
            else "; ".join(verdict.reasons) + " (rolled back: its trial is over)",
            {
                "canary": trial.version,
                "champion": trial.champion or "none",
                "canary_rate": c["b"],
                "champion_rate": c["a"],
                "difference": c["difference"],
                "ci95_low": c["ci95_low"],
                "ci95_high": c["ci95_high"],
                "canary_users": c["users_b"],
                "champion_users": c["users_a"],
                "policy": dg.MetadataValue.json({"tolerance": config.tolerance, "min_users": config.min_users}),
            },
        )

    return online_canary_gate


def online_champion_asset(surface: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """Promotion in online mode: yesterday's canary, once it won its trial."""

    @surface_asset(
        surface,
        "champion",
        partitions=partitions,
        deps=[dg.AssetKey([surface, "canary_trial"])],
        talks_to_s3=True,
        kinds={"s3"},
        code_version=promotion_code(__name__),
        description=f"Promotion: champion.json of {surface} points at the canary that won its online trial on the "
        "partition's day (nothing changes when no canary served; a canary that lost is not promoted, "
        "with no materialization and the run successful).",
        output_required=False,
    )
    def champion(
        context: dg.AssetExecutionContext, lake: DataLakeResource, s3: S3Resource
    ) -> Iterator[dg.MaterializeResult]:
        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        trial = state.load(TrialRecord, surface, day)
        before = registry.champion(surface)
        version = trial.version
        if version is None or version == before:
            state.save(
                PromotionRecord(version=before, previous=before, promoted=False, verdict="no canary to promote"),
                surface,
                day,
            )
            yield dg.MaterializeResult(
                metadata={
                    "day": day.isoformat(),
                    "champion": before or "none",
                    "changed": 0,
                    "note": "no canary to promote",
                }
            )
            return
        if trial.passed is None:
            raise dg.Failure(f"{surface}/{version} has no online verdict for {day}: run its online_canary_gate first")
        refused = None if trial.passed else (trial.reasons or ["the online canary gate refused it"])[0]
        pointer = promote_or_not(context, registry, state, surface, day, version, refused)
        if pointer is None:
            return
        state.save(state.load(PromotionRecord, surface, day).but(trial=trial.comparison), surface, day)
        yield dg.MaterializeResult(
            metadata={
                "day": day.isoformat(),
                "champion": version,
                "previous_champion": before or "none",
                "changed": 1,
                "data_through": registry.data_through(surface, version) or "",
                "online_difference": trial.comparison["difference"],
                "pointer": dg.MetadataValue.url(s3.uri("serving", surface, "champion.json")),
                "previous_versions": dg.MetadataValue.json(pointer.get("previous", [])),
            }
        )

    return champion
