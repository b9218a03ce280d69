"""Per surface: the candidate of the partition's day evaluated against the champion on that day
(which neither trained on) through the serving retrieval path, with the baselines (popularity;
random where the log has an exploration share; buy again, reported and not gated, where the
vocabulary allows repeats) on the same users, and ranking on the day's
slates (sessions with impressions: slate AUC per guarded outcome, NDCG@10 of the ranked slate);
and the gate on promotion (serving.evaluation.gate), whose verdict the champion step reads
(assets.lifecycle.verdicts: a refused candidate is a verdict, not a failed run)."""

from dataclasses import asdict
from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.conventions import code_version, with_defaults
from assets.days import partition_day
from assets.lifecycle.surface_asset import surface_asset
from assets.lifecycle.verdicts import verdict_result
from assets.metadata import table_metadata
from assets.records import CanaryRecord, CandidateRecord, FinetuneRecord
from assets.resources import (
    DataLakeResource,
    FeastResource,
    S3Resource,
    VocabularyResource,
)
from assets.state import lifecycle_state
from serving.evaluation.gate import GatePolicy, Verdict
from serving.registry.manifest import LoadCheckError

CANARY_K = 100
# the gate's defaults; the deployment's gate is the check's config with the settings' defaults
# (`canary_gate_check`: PINREC_GATE_BASELINES=0 drops the baseline rule); a run that changes it is
# recorded on the check
DEFAULT_GATE = GatePolicy()


class CanaryConfig(dg.Config):
    max_users: int = Field(default=400, description="Users of the evaluation day sampled for the canary.")
    latency_rounds: int = Field(
        default=3,
        description="Times each sampled user's request is sent to candidate and champion in turn (interleaved) "
        "to compare their latency in one process.",
    )


class CanaryGateConfig(dg.Config):
    tolerance: float = Field(
        default=DEFAULT_GATE.tolerance, description="Largest relative drop vs the champion on a guarded metric."
    )
    z: float = Field(
        default=DEFAULT_GATE.z,
        description="A guarded figure may also fall by this many standard errors of the difference (over the "
        "day's users), when that is more than the tolerance.",
    )
    recall_floor: float = Field(
        default=DEFAULT_GATE.floors[f"recall@{CANARY_K}"],
        description=f"Absolute floor on recall@{CANARY_K} (unless the yardstick has the random baseline to beat).",
    )
    max_latency_ratio: float = Field(
        default=DEFAULT_GATE.max_latency_ratio,
        description="Largest candidate/champion ratio of median latency (same run).",
    )
    max_latency_p99_ms: float = Field(
        default=DEFAULT_GATE.max_latency_p99_ms, description="Absolute cap on p99 retrieval latency per user."
    )
    ranking_tolerance: float = Field(
        default=DEFAULT_GATE.ranking_tolerance,
        description="Largest absolute drop vs the champion in slate AUC per guarded "
        "outcome and slate NDCG@10 (days with impressions).",
    )
    ranking_z: float = Field(
        default=DEFAULT_GATE.ranking_z,
        description="A ranking figure may also fall by this many standard errors of the "
        "difference of the two slate means, when that is more than the tolerance.",
    )
    beat_baselines: bool = Field(
        default=DEFAULT_GATE.beat_baselines,
        description="Judge the candidate against the popularity policy, and the random one where measurable: a "
        "first candidate must beat them on the yardstick, a successor must not be below them by more than "
        "baseline_z standard errors on the position-corrected replay.",
    )
    baseline_z: float = Field(
        default=DEFAULT_GATE.baseline_z,
        description="With a champion, the candidate may fall this many standard errors of the difference "
        "(over the day's users) below a baseline; 0: it must beat every baseline, as a first candidate must.",
    )

    def policy(
        self,
        guarded_outcomes: tuple[str, ...] | None = None,
        yardstick: str | None = None,
        random_measured: bool = False,
    ) -> GatePolicy:
        """The gate; `guarded_outcomes`: the vocabulary's `guarded` (default the built-in data's
        click and save); `yardstick`: the figure the candidate must beat the baselines on (the
        evaluation's). With a yardstick (a log with impressions) the candidate may not fall below
        the champion on it and on the slate figures (absolute tolerance or z standard errors), and
        recall is not guarded against the champion (it ranks policies against what users do,
        docs/yardstick.md). Where the random policy is measured on the yardstick (`random_measured`:
        the log has an exploration share) and the baselines rule is on, beating popularity and
        random there is what "the served path works at all" means, and the recall floor is not
        applied: it refused 18 of 21 candidates retrained from the champion's data with another
        seed whose yardstick matched the champion's (benchmarks/canary_calibration.py: a model that
        serves what users engage with given a showing finds next engagements at about chance,
        100 / catalogue). Elsewhere the floor stays (a broken index listing random items replays
        above popularity, and only the random baseline or the floor can refuse it); without a
        yardstick recall@100 per guarded outcome is guarded against the champion as before.
        The baselines are compared on the position-corrected replay (`RANKING_YARDSTICK`) where the
        evaluation records it: the figure validated against what users do across policies that
        list different kinds of impression (docs/yardstick.md); see `GatePolicy.baseline_z`."""
        from serving.evaluation.yardstick import RANKING_YARDSTICK

        yardstick = yardstick or DEFAULT_GATE.yardstick
        outcomes = guarded_outcomes or ("click", "save")
        recall = (f"recall@{CANARY_K}", *(f"recall@{CANARY_K}/{o}" for o in outcomes))
        guarded = () if yardstick not in recall else recall
        slates = (*(f"slate_auc/{o}" for o in outcomes), "slate_ndcg@10")
        ranking = slates if yardstick in recall else (yardstick, *slates)
        return GatePolicy(
            guarded=guarded,
            tolerance=self.tolerance,
            z=self.z,
            floors={}
            if yardstick not in recall and self.beat_baselines and random_measured
            else {f"recall@{CANARY_K}": self.recall_floor},
            max_latency_ratio=self.max_latency_ratio,
            max_latency_p99_ms=self.max_latency_p99_ms,
            ranking_guarded=ranking,
            ranking_tolerance=self.ranking_tolerance,
            ranking_z=self.ranking_z,
            yardstick=yardstick,
            beat_baselines=self.beat_baselines,
            baseline_yardstick=yardstick if yardstick in recall else RANKING_YARDSTICK,
            baseline_z=self.baseline_z,
        )

    def overrides(self) -> dict[str, dict[str, float]]:
        """The fields this run sets away from the deployment's gate (this class's defaults)."""
        default = type(self)()
        return {
            name: {"deployment": getattr(default, name), "run": getattr(self, name)}
            for name in type(self).model_fields
            if getattr(self, name) != getattr(default, name)
        }


def evaluation_users(events, impression: str | None, max_users: int) -> dict[str, list[int]]:
    """Each surface's users evaluated on the day: of the users with an event other than an
    impression there, every k-th in id order, at most `max_users`."""
    engaged = events[events["outcome"] != impression] if impression is not None else events
    samples = {}
    for surface, ids in engaged.groupby("surface")["user_id"]:
        active = sorted(set(ids.tolist()))
        samples[str(surface)] = active[:: max(1, len(active) // max_users)][:max_users]
    return samples


def _sequences_at_day_start(feast: FeastResource, users: list[int], day, active: list[int], cache_dir: Path) -> dict:
    """Each user's sequence as the online store held it when the day began (point in time). The
    day's users of every surface (`active`) are asked of Feast once a day, and the surfaces'
    evaluations share the answer (`feature_pipeline.day_start`: Feast's file store reads its whole
    table for every question)."""
    from feature_pipeline.day_start import day_start_examples
    from serving.service.encoder import UserSequence

    rows = day_start_examples(feast.store(), feast.settings().data_dir, day, active, cache_dir)
    rows = rows[rows["user_id"].isin(users)]
    return {int(r["user_id"]): UserSequence.from_features(r) for r in rows.to_dict("records")}


def canary_evaluation_asset(surface: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "canary_evaluation",
        partitions=partitions,
        deps=[dg.AssetKey([surface, "candidate_version"]), dg.AssetKey("serving_log")],
        kinds={"faiss", "feast"},
        code_version=code_version(
            __name__,
            "serving.evaluation.canary",
            "serving.evaluation.figures",
            "serving.evaluation.buy_again",
            "serving.evaluation.versions",
            "serving.service.retriever",
            "serving.service.encoder",
            "training.merge",
        ),
        description=f"Candidate vs champion on {surface}, on the partition's day (which neither trained on): "
        "the yardstick, recall@100 per engaged outcome of the vocabulary, diversity, latency, through the "
        "serving retrieval path; ranking of the day's slates (slate AUC per outcome, NDCG@10) when the log "
        "has impressions; and the baselines (popularity; random where the log has an exploration share; "
        "buy again, reported and not gated, where the vocabulary allows repeats) "
        "on the same users. In a closed loop the slots either version served that day are left out "
        "(serving.evaluation.canary.not_served_by).",
    )
    def canary_evaluation(
        context: dg.AssetExecutionContext,
        config: CanaryConfig,
        lake: DataLakeResource,
        feast: FeastResource,
        s3: S3Resource,
        vocabulary: VocabularyResource,
    ) -> dg.MaterializeResult:
        import pandas as pd

        from events.serving_log import ServingLogTable
        from feature_pipeline.store import codes_path, feature_codes
        from serving.evaluation.canary import not_served_by
        from serving.evaluation.figures import day_figures
        from serving.evaluation.versions import champion_in_s3, load_version
        from serving.evaluation.yardstick import RANKING_YARDSTICK
        from serving.registry.comparable import comparable_champion

        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        vocab = vocabulary.load()
        candidate = state.load(CandidateRecord, surface, day).version
        # an earlier verdict of this day must not outlive a new evaluation that fails
        state.path(CanaryRecord.step, surface, day).unlink(missing_ok=True)
        champion = comparable_champion(registry, surface, candidate, context.log.warning)  # None: judged alone
        day_events = lake.table().read_day(day)
        # the users evaluated: every surface's sample of the day, drawn before the compared versions
        # are known, so the surfaces' evaluations ask Feast for their sequences once
        samples = evaluation_users(day_events, vocab.impression, config.max_users)
        users = samples.get(surface, [])
        events = day_events[day_events["surface"] == surface]
        serving_log = ServingLogTable(lake.root).read_day(day)
        # what the compared versions served is not a held-out target of theirs (closed loop)
        rows_before = len(events)
        events = not_served_by(events, serving_log, (candidate, champion))
        served_rows_left_out = rows_before - len(events)
        # recall per engaged outcome the day's log has (a log may lack some of the vocabulary's)
        outcomes = [o for o in vocab.engaged if (events["outcome"] == o).any()]
        events = events[events["user_id"].isin(users)]
        every_surface = sorted(set().union(*samples.values()))
        cache_dir = Path(lake.root).parent / "evaluation_cache" / "day_start"
        sequences = _sequences_at_day_start(feast, users, day, every_surface, cache_dir)
        cache = Path(lake.root).parent / "version_cache"
        # the codes of the features the versions read (the registry's, else the ledger's): a
        # version trained with other codes is refused, as serving refuses it
        codes = feature_codes(feast.store()) or {"outcomes": vocab.codes.outcomes, "surfaces": vocab.codes.surfaces}
        where = f"the features under {codes_path(feast.settings().data_dir)}"
        loaded, unloadable, repaired = {}, {}, []
        for role, version in (("candidate", candidate), ("champion", champion)):
            if version is None or (role == "champion" and version == candidate):
                continue
            try:
                if role == "champion":  # what a new serving process would load: repaired if damaged
                    repaired = champion_in_s3(registry, surface, version, cache)
                    if repaired:
                        context.log.warning(
                            f"{surface}/canary_evaluation on {day}: the champion {version} was "
                            f"damaged in S3; put back {repaired} from the verified local copy"
                        )
                loaded[role] = load_version(registry, surface, version, cache, codes, where)
            except LoadCheckError as exc:  # damaged or unusable: a verdict, not an error of this run
                unloadable[role] = str(exc)
                context.log.warning(f"{surface}/canary_evaluation on {day}: the {role} does not load: {exc}")
        finetune = state.load(FinetuneRecord, surface, day)
        train = pd.concat(
            [lake.table().read_day(date.fromisoformat(d)) for d in finetune.train_days], ignore_index=True
        )
        train = train[train["surface"] == surface]
        # every role's figures: the versions (recall, ranking, latency compared in one process),
        # popularity, "buy again" where the vocabulary allows repeats (reported, not gated), the yardstick
        figures = day_figures(
            loaded,
            sequences,
            events,
            serving_log[serving_log["surface"] == surface],
            train,
            vocab,
            users,
            k=CANARY_K,
            outcomes=outcomes,
            latency_rounds=config.latency_rounds,
        )
        results, baselines, yardstick = figures.versions, figures.baselines, figures.yardstick
        record = CanaryRecord(
            candidate=candidate,
            champion=champion if "champion" in results else None,
            metrics=results,
            baselines=baselines,
            yardstick=yardstick,
            outcomes=outcomes,
            users=len(users),
            data_through={
                "candidate": registry.data_through(surface, candidate),
                "champion": registry.data_through(surface, champion if "champion" in results else None),
            },
            unloadable=unloadable,
            served_rows_left_out=served_rows_left_out,
        )
        state.save(record, surface, day)
        metadata = {
            "day": day.isoformat(),
            "candidate": candidate,
            "champion": champion or "none (the first candidate bootstraps it)",
            "users": len(users),
            "served_rows_left_out": served_rows_left_out,
            "yardstick": yardstick,
        }
        for role, reason in unloadable.items():
            metadata[f"{role}_does_not_load"] = reason
        if repaired:
            metadata["champion_repaired"] = dg.MetadataValue.json(repaired)
        for role, values in results.items():
            metadata.update({f"{role}/{name}": float(value) for name, value in values.items()})
        for role, values in baselines.items():  # random (an exploration share in the log) has the yardstick only
            metadata.update(
                {
                    f"{role}/{name}": float(values[name])
                    for name in (f"recall@{CANARY_K}", yardstick, RANKING_YARDSTICK)
                    if name in values
                }
            )
        metadata["metrics"] = table_metadata(
            [
                {"metric": name, **{role: float(results[role].get(name, float("nan"))) for role in results}}
                for name in sorted(results.get("candidate", {}))
            ],
            {"metric": "string", **{role: "float" for role in results}},
        )
        return dg.MaterializeResult(metadata=metadata)

    return canary_evaluation


def canary_gate_check(surface: str, beat_baselines: bool) -> dg.AssetChecksDefinition:
    """The gate of `surface`; `beat_baselines`: the deployment's default of that rule
    (PINREC_GATE_BASELINES)."""
    Config = with_defaults(CanaryGateConfig, beat_baselines=beat_baselines)

    @dg.asset_check(
        asset=dg.AssetKey([surface, "canary_evaluation"]),
        name="canary_gate",
        blocking=True,
        description="The offline verdict on the candidate (serving.evaluation.gate): a first candidate must beat "
        "the popularity policy (and the random one where measurable) on the yardstick, a successor must not be "
        "below them beyond their sampling error on the position-corrected replay; clear the absolute "
        "floors and latency caps; be within tolerance of the champion on every guarded figure (the yardstick, "
        "slate AUC and NDCG@10; recall@100 on a log without impressions); and have trained on data no older than the "
        "champion's. A refusal fails this check with WARN severity and leaves the run successful: the "
        "champion step reads the verdict and promotes nothing. Records every rule as it is read, with "
        "its figures and margin.",
    )
    def canary_gate(
        context: dg.AssetCheckExecutionContext,
        config: Config,
        lake: DataLakeResource,
        vocabulary: VocabularyResource,
    ) -> dg.AssetCheckResult:
        from serving.evaluation.gate import gate_rules

        day = partition_day(context.op_execution_context)
        state = lifecycle_state(lake)
        canary = state.load(CanaryRecord, surface, day)
        through = canary.data_through
        random_measured = canary.yardstick in canary.baselines.get("random", {})
        policy = config.policy(vocabulary.load().guarded, canary.yardstick, random_measured)
        rules = gate_rules(
            canary.metrics.get("candidate", {}),
            canary.metrics.get("champion"),
            policy,
            baselines=canary.baselines,
            candidate_data_through=date.fromisoformat(through["candidate"]) if through.get("candidate") else None,
            champion_data_through=date.fromisoformat(through["champion"]) if through.get("champion") else None,
        )
        if "candidate" in canary.unloadable:
            verdict = Verdict(False, (f"the candidate does not load: {canary.unloadable['candidate']}",))
        else:
            verdict = Verdict.of(rules)
        overrides = config.overrides()
        if overrides:
            context.log.warning(
                f"{surface}/canary_gate on {day}: run config overrides the deployment's gate: {overrides}"
            )
        state.save(
            canary.but(passed=verdict.passed, reasons=list(verdict.reasons), gate_overrides=overrides), surface, day
        )
        description = "candidate passes the gate" if verdict.passed else "; ".join(verdict.reasons)
        if verdict.passed and "champion" in canary.unloadable:
            description += (
                f" (judged on the floors alone: the champion does not load: {canary.unloadable['champion']}; "
                "serving falls back to an earlier champion until this candidate replaces it)"
            )
        if overrides:
            description = f"[run config overrides the deployment's gate: {', '.join(overrides)}] {description}"
        yardstick = canary.yardstick
        figures = {
            f"yardstick/{role}": float(values[yardstick])
            for role, values in {**canary.metrics, **canary.baselines}.items()
            if yardstick in values
        }
        return verdict_result(
            context,
            surface,
            verdict,
            rules,
            description,
            {
                "candidate": canary.candidate,
                "champion": canary.champion or "none",
                "yardstick": yardstick,
                **figures,
                "gate_policy": dg.MetadataValue.json(asdict(policy)),
                "overridden_by_run_config": dg.MetadataValue.json(overrides),
            },
        )

    return canary_gate
