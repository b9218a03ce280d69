"""The online canary stage (PINREC_ONLINE_CANARY=1): a candidate that passes the offline gate is
released as the canary from the next day (canary.json, a hashed share of users); from then on,
each day, its users' online figures against the champion's users', over the trial's days so far,
decide whether it is promoted, rolled back or served another day.

    online_metrics[D] --> canary_trial[D] --online_canary_gate--> champion[D]   decide the trial's day D
    canary_evaluation[D] --canary_gate--> canary_release[D] (after champion[D])   canary from day D+1

`canary_trial[D]` gathers the trial's days (the canary released on its first day's eve, through
D); `online_canary_gate` decides with the sequential non-inferiority test of
`serving.evaluation.online_gate` (engagements, clicks + saves, per 1,000 served impressions of
the canary's users against the champion's): promote, roll back (a clear loser at once, or one not
shown within the margin once the trial has its information), or continue (too few users or too
little information yet: the canary keeps serving, up to the trial's maximum days). A canary that
no longer passes its load check (`serving.service.checks.check_version` on what is in S3 now: an
object damaged since its release) is rolled back whatever its figures, so promotion never names a
version that cannot load. `champion[D]` acts on the decision (promotes, or clears canary.json);
`canary_release[D]` releases the day's candidate only when no trial is running (one canary at a
time: a candidate that arrives during a trial is held back, and the next nightly run offers a
newer one)."""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg
import pandas as pd
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
from serving.evaluation.gate import Verdict
from serving.evaluation.online_gate import CONTINUE, PROMOTE, ROLL_BACK, OnlinePolicy, online_decision


class OnlineGateConfig(dg.Config):
    """The online trial's design (serving.evaluation.online_gate.OnlinePolicy)."""

    margin: float = Field(
        default=OnlinePolicy.margin,
        description="Non-inferiority margin: promote once the canary's engagements per 1,000 impressions are "
        "shown to be at least (1 - margin) x the champion's.",
    )
    alpha: float = Field(default=OnlinePolicy.alpha, description="Chance of promoting a canary worse than the margin.")
    power: float = Field(
        default=OnlinePolicy.power,
        description="Chance an equal canary is promoted once the trial has the information for its decision.",
    )
    loser_alpha: float = Field(
        default=OnlinePolicy.loser_alpha,
        description="Chance, over all the trial's daily looks, that an equal canary is stopped early as a clear loser.",
    )
    max_days: int = Field(default=OnlinePolicy.max_days, description="The longest a trial runs before it decides.")
    min_users: int = Field(
        default=OnlinePolicy.min_users, description="Fewest canary users (and champion users) to decide a trial."
    )

    def policy(self) -> OnlinePolicy:
        return OnlinePolicy(
            margin=self.margin,
            alpha=self.alpha,
            power=self.power,
            loser_alpha=self.loser_alpha,
            max_days=self.max_days,
            min_users=self.min_users,
        )


def canary_release_asset(surface: str, partitions: dg.PartitionsDefinition, traffic: float) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "canary_release",
        partitions=partitions,
        deps=[dg.AssetKey([surface, "canary_evaluation"]), dg.AssetKey([surface, "champion"])],
        talks_to_s3=True,
        kinds={"s3"},
        code_version=code_version(__name__, "serving.registry.store"),
        description=f"The {surface} candidate of day D, past the offline gate, serves the canary share of users "
        "from day D+1 (canary.json) until its trial decides; with no champion yet it becomes the champion "
        "directly. A champion that does not load (the canary evaluation found it damaged beyond repair) is "
        "first rolled back to the newest earlier champion that loads; with none, the candidate becomes the "
        "champion. A candidate the gate refused, or one that arrives while another canary's trial runs, is "
        "not released (no materialization; the run stays successful).",
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
        running = registry.canary(surface)
        if running and champion and not broken:  # one canary at a time: its trial decides first
            context.log.info(f"{surface} on {day}: {candidate} held back: the canary {running[0]}'s trial is running")
            return
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


def _running_trial(state, surface: str, day: date) -> tuple[str, date] | None:
    """(canary, first day) of the trial that serves `day`: the canary released on the eve of `day`,
    or the trial of `day - 1` when its gate said continue; None when no canary serves."""
    previous = day - timedelta(days=1)
    released = state.load(ReleaseRecord, surface, previous) if state.has(ReleaseRecord, surface, previous) else None
    if released and released.action.startswith("canary"):
        return released.version, day
    before = state.load(TrialRecord, surface, previous) if state.has(TrialRecord, surface, previous) else None
    if before and before.version and before.decision == CONTINUE:
        return before.version, date.fromisoformat(before.started)
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
        description=f"The {surface} canary's trial through day D: its users' engagements per 1,000 served "
        "impressions against the champion's users', over the trial's days so far (ln of their ratio with its "
        "standard error, and the difference with a 95% bootstrap interval), and whether it still loads.",
    )
    def canary_trial(context: dg.AssetExecutionContext, lake: DataLakeResource, s3: S3Resource) -> dg.MaterializeResult:
        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        running = _running_trial(state, surface, day)
        if running is None:
            state.save(TrialRecord(version=None, day=day.isoformat()), surface, day)
            return dg.MaterializeResult(metadata={"day": day.isoformat(), "canary": "none served on this day"})
        trial, started = running
        table = ServingLogTable(lake.root)
        days = [started + timedelta(days=i) for i in range((day - started).days + 1)]
        log = pd.concat([table.read_day(d) for d in days], ignore_index=True)
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
        state.save(
            TrialRecord(
                version=trial,
                day=day.isoformat(),
                champion=registry.champion(surface),
                comparison=comparison.to_dict(),
                load_error=load_error,
                started=started.isoformat(),
                trial_day=len(days),
            ),
            surface,
            day,
        )
        return dg.MaterializeResult(
            metadata={
                "day": day.isoformat(),
                "canary": trial,
                "trial_started": started.isoformat(),
                "trial_day": len(days),
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
        description="The online decision on the canary's trial (serving.evaluation.online_gate, a sequential "
        "non-inferiority test checked daily): promote once its users' engagements per 1,000 served impressions "
        "are shown within the margin of the champion's users'; roll back a clear loser at once, one not shown "
        "within the margin once the trial has its information, or one that no longer loads; otherwise the "
        "trial continues (the check passes, metadata `decision`). A roll back fails this check with WARN "
        "severity and leaves the run successful: the champion step reads the decision. Passes with nothing to "
        "decide when no canary served.",
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
                metadata={"canary": "none", "verdict": "nothing to promote", "decision": "none"},
            )
        c, policy = trial.comparison, config.policy()
        decision = online_decision(c, trial.trial_day, policy)
        if trial.load_error:  # whatever its figures: a version that does not load is never promoted
            reason = f"the canary {trial.version} does not load: {trial.load_error}"
            decision = decision.rolled_back(reason)
        state.save(
            trial.but(passed=decision.action == PROMOTE, reasons=list(decision.reasons), decision=decision.action),
            surface,
            day,
        )
        rules = list(decision.rules)
        if decision.action == CONTINUE:
            description = f"canary {trial.version}, trial day {trial.trial_day}: continues ({decision.reasons[0]})"
        elif decision.action == PROMOTE:
            description = f"canary {trial.version} wins its trial: {c['b']:.2f} vs {c['a']:.2f} {c['metric']}"
        else:
            description = "; ".join(decision.reasons) + " (rolled back: its trial is over)"
        return verdict_result(
            context,
            surface,
            Verdict(decision.action != ROLL_BACK, decision.reasons),
            rules,
            description,
            {
                "decision": decision.action,
                "canary": trial.version,
                "champion": trial.champion or "none",
                "trial_started": trial.started,
                "trial_day": trial.trial_day,
                "canary_rate": c["b"],
                "champion_rate": c["a"],
                "difference": c["difference"],
                "ci95_low": c["ci95_low"],
                "ci95_high": c["ci95_high"],
                "log_ratio": c.get("log_ratio", float("nan")),
                "log_ratio_se": c.get("log_ratio_se", float("nan")),
                "target_se": policy.target_se,
                "canary_users": c["users_b"],
                "champion_users": c["users_a"],
                "policy": dg.MetadataValue.json(config.model_dump()),
            },
            line=decision.line,
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
        description=f"Promotion: champion.json of {surface} points at the canary whose online trial decided to "
        "promote it on the partition's day; a canary rolled back is removed from canary.json (not promoted, no "
        "materialization, the run successful); nothing changes while its trial continues or when no canary "
        "served.",
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
        if trial.decision is None:
            raise dg.Failure(f"{surface}/{version} has no online decision for {day}: run its online_canary_gate first")
        if trial.decision == CONTINUE:
            line = f"trial continues: {(trial.reasons or ['not decided yet'])[0]}"
            state.save(PromotionRecord(version=before, previous=before, promoted=False, verdict=line), surface, day)
            tag_run(context, surface, line)
            yield dg.MaterializeResult(
                metadata={
                    "day": day.isoformat(),
                    "champion": before or "none",
                    "changed": 0,
                    "note": f"the canary {version}'s trial continues (day {trial.trial_day})",
                }
            )
            return
        current = registry.canary(surface)
        if trial.decision == ROLL_BACK and current and current[0] == version:
            registry.clear_canary(surface)  # the rollback: the canary no longer serves
        refused = None if trial.decision == PROMOTE else (trial.reasons or ["the online canary gate refused it"])[0]
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
