"""Per surface: the candidate of the partition's day evaluated against the champion on that day
(which neither trained on) through the serving retrieval path, and ranking on the day's slates
(sessions with impressions: slate AUC per guarded outcome, NDCG@10 of the ranked slate), and the
blocking gate on promotion, which records every rule's figures and margin."""

from dataclasses import asdict
from datetime import UTC, date, datetime, time
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.config import SETTINGS
from assets.conventions import code_version
from assets.days import partition_day
from assets.lifecycle.surface_asset import surface_asset
from assets.metadata import table_metadata
from assets.resources import (
    DataLakeResource,
    FeastResource,
    S3Resource,
    VocabularyResource,
)
from assets.state import lifecycle_state
from serving.evaluation.canary import GatePolicy
from serving.registry.store import LoadCheckError

CANARY_K = 100
DEPLOYMENT_GATE = GatePolicy()  # the deployment's gate; a run that changes it is recorded on the check


class CanaryConfig(dg.Config):
    max_users: int = Field(default=400, description="Users of the evaluation day sampled for the canary.")


class CanaryGateConfig(dg.Config):
    tolerance: float = Field(
        default=DEPLOYMENT_GATE.tolerance, description="Largest relative drop vs the champion on a guarded metric."
    )
    recall_floor: float = Field(
        default=DEPLOYMENT_GATE.floors[f"recall@{CANARY_K}"], description=f"Absolute floor on recall@{CANARY_K}."
    )
    max_latency_ratio: float = Field(
        default=DEPLOYMENT_GATE.max_latency_ratio,
        description="Largest candidate/champion ratio of median latency (same run).",
    )
    max_latency_p99_ms: float = Field(
        default=DEPLOYMENT_GATE.max_latency_p99_ms, description="Absolute cap on p99 retrieval latency per user."
    )
    ranking_tolerance: float = Field(
        default=DEPLOYMENT_GATE.ranking_tolerance,
        description="Largest absolute drop vs the champion in slate AUC per guarded "
        "outcome and slate NDCG@10 (days with impressions).",
    )
    ranking_z: float = Field(
        default=DEPLOYMENT_GATE.ranking_z,
        description="A ranking figure may also fall by this many standard errors of the "
        "difference of the two slate means, when that is more than the tolerance.",
    )

    def policy(self, guarded_outcomes: tuple[str, ...] | None = None) -> GatePolicy:
        """The gate; `guarded_outcomes`: the vocabulary's `guarded` (default the built-in data's
        click and save), whose recall@100 may not fall below the champion's."""
        guarded = (
            DEPLOYMENT_GATE.guarded
            if guarded_outcomes is None
            else (f"recall@{CANARY_K}", *(f"recall@{CANARY_K}/{o}" for o in guarded_outcomes))
        )
        ranking = (
            DEPLOYMENT_GATE.ranking_guarded
            if guarded_outcomes is None
            else (*(f"slate_auc/{o}" for o in guarded_outcomes), "slate_ndcg@10")
        )
        return GatePolicy(
            guarded=guarded,
            tolerance=self.tolerance,
            floors={f"recall@{CANARY_K}": self.recall_floor},
            max_latency_ratio=self.max_latency_ratio,
            max_latency_p99_ms=self.max_latency_p99_ms,
            ranking_guarded=ranking,
            ranking_tolerance=self.ranking_tolerance,
            ranking_z=self.ranking_z,
        )

    def overrides(self) -> dict[str, dict[str, float]]:
        """The fields this run sets away from the deployment's gate."""
        default = CanaryGateConfig()
        return {
            name: {"deployment": getattr(default, name), "run": getattr(self, name)}
            for name in type(self).model_fields
            if getattr(self, name) != getattr(default, name)
        }


def _sequences_at_day_start(feast: FeastResource, users: list[int], day) -> dict:
    """Each user's sequence as the online store held it when the day began (point in time)."""
    import pandas as pd

    from feature_pipeline.store import training_examples
    from serving.service.encoder import UserSequence

    start = pd.Timestamp(datetime.combine(day, time(0), tzinfo=UTC))
    rows = training_examples(feast.store(), pd.DataFrame({"user_id": users, "event_ts": start}))
    return {int(r["user_id"]): UserSequence.from_features(r) for r in rows.to_dict("records")}


def version_data_through(registry, surface: str, version: str | None) -> str | None:
    """The newest day a published version trained on (its manifest's data partitions)."""
    if version is None:
        return None
    days = registry.manifest(surface, version).get("data_partitions") or []
    return max(days) if days else None


def load_version(registry, surface: str, version: str, cache: Path, codes=None, where: str = "the features"):
    """A published version fetched (checksums verified) and loaded as the service loads it (with
    the features' `codes`); `LoadCheckError` when it is damaged or cannot load (S3 errors pass
    through: a retry may help)."""
    from serving.registry.store import RegistryError
    from serving.service.retriever import LoadedVersion

    try:
        local = registry.fetch(surface, version, cache)
    except RegistryError as exc:  # IntegrityError (a damaged object), a missing version
        raise LoadCheckError(f"{surface}/{version}: {exc}") from exc
    try:
        return LoadedVersion.from_local(local, codes, where)
    except Exception as exc:  # noqa: BLE001 - whatever loading raises, the version is unusable (as check_version)
        raise LoadCheckError(f"{surface}/{version} does not load: {type(exc).__name__}: {exc}") from exc


def champion_in_s3(registry, surface: str, champion: str, cache: Path) -> list[str]:
    """The champion as a new serving process would get it from S3 (fetched fresh, loaded, asked
    its known queries: `serving.service.checks.check_version`). An object that no longer matches the
    manifest is put back from this machine's verified copy (`cache`) when it has one
    (`Registry.repair`); returns the files put back. `LoadCheckError` when it cannot serve."""
    from serving.registry.store import IntegrityError, RegistryError
    from serving.service.checks import check_version

    try:
        check_version(registry, surface, champion)
        return []
    except LoadCheckError:
        raise
    except IntegrityError as exc:
        local = cache / surface / champion
        try:
            repaired = registry.repair(surface, champion, local) if local.is_dir() else []
        except IntegrityError:
            repaired = []
        if not repaired:
            raise LoadCheckError(f"{surface}/{champion} is damaged in S3 and no intact copy is at hand: {exc}") from exc
        check_version(registry, surface, champion)
        return repaired
    except RegistryError as exc:  # a missing version
        raise LoadCheckError(f"{surface}/{champion}: {exc}") from exc


def canary_evaluation_asset(surface: str) -> dg.AssetsDefinition:
    @surface_asset(
        surface,
        "canary_evaluation",
        deps=[dg.AssetKey([surface, "candidate_version"]), dg.AssetKey("serving_log")],
        kinds={"faiss", "feast"},
        code_version=code_version(
            "serving.evaluation.canary", "serving.service.retriever", "serving.service.encoder", "training.merge"
        ),
        description=f"Candidate vs champion on {surface}, on the partition's day (which neither trained on): "
        "recall@100 per engaged outcome of the vocabulary, diversity, latency, through the serving "
        "retrieval path; ranking of the day's slates (slate AUC per outcome, NDCG@10) when the log "
        "has impressions; and the popularity baseline's recall@100 on the same users. In a closed "
        "loop the slots either version served that day are left out (serving.evaluation.canary.not_served_by).",
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
        from serving.evaluation.canary import evaluate_popularity, evaluate_version, not_served_by
        from serving.registry.comparable import comparable_champion

        state, registry, day = lifecycle_state(lake), s3.registry(), partition_day(context)
        vocab = vocabulary.load()
        candidate = state.read("candidate", surface, day)["version"]
        # an earlier verdict of this day must not outlive a new evaluation that fails
        state.path("canary", surface, day).unlink(missing_ok=True)
        champion = comparable_champion(registry, surface, candidate, context.log.warning)  # None: judged alone
        events = lake.table().read_day(day)
        events = events[events["surface"] == surface]
        # what the compared versions served is not a held-out target of theirs (closed loop)
        rows_before = len(events)
        events = not_served_by(events, ServingLogTable(lake.root).read_day(day), (candidate, champion))
        served_rows_left_out = rows_before - len(events)
        # recall per engaged outcome the day's log has (a log may lack some of the vocabulary's)
        outcomes = [o for o in vocab.engaged if (events["outcome"] == o).any()]
        users = sorted(set(events.loc[events["outcome"] != vocab.impression, "user_id"].tolist()))
        users = users[:: max(1, len(users) // config.max_users)][: config.max_users]
        events = events[events["user_id"].isin(users)]
        sequences = _sequences_at_day_start(feast, users, day)
        cache = Path(lake.root).parent / "version_cache"
        # the codes of the features the versions read (the registry's, else the ledger's): a
        # version trained with other codes is refused, as serving refuses it
        codes = feature_codes(feast.store()) or {"outcomes": vocab.codes.outcomes, "surfaces": vocab.codes.surfaces}
        where = f"the features under {codes_path(feast.settings().data_dir)}"
        results, unloadable, repaired = {}, {}, []
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
                loaded = load_version(registry, surface, version, cache, codes, where)
            except LoadCheckError as exc:  # damaged or unusable: a verdict, not an error of this run
                unloadable[role] = str(exc)
                context.log.warning(f"{surface}/canary_evaluation on {day}: the {role} does not load: {exc}")
                continue
            results[role] = evaluate_version(
                loaded,
                sequences,
                events,
                k=CANARY_K,
                outcomes=outcomes,
                engaged=vocab.engaged,
                impression=vocab.impression,
            )
        finetune = state.read("finetune", surface, day)
        train = pd.concat(
            [lake.table().read_day(date.fromisoformat(d)) for d in finetune["train_days"]], ignore_index=True
        )
        popularity = evaluate_popularity(
            train[train["surface"] == surface], sequences, events, k=CANARY_K, outcomes=outcomes, engaged=vocab.engaged
        )
        through = {
            "candidate": version_data_through(registry, surface, candidate),
            "champion": version_data_through(registry, surface, champion if "champion" in results else None),
        }
        state.write(
            {
                "candidate": candidate,
                "champion": champion if "champion" in results else None,
                "metrics": results,
                "popularity": popularity,
                "outcomes": outcomes,
                "users": len(users),
                "data_through": through,
                "unloadable": unloadable,
                "served_rows_left_out": served_rows_left_out,
            },
            "canary",
            surface,
            day,
        )
        metadata = {
            "day": day.isoformat(),
            "candidate": candidate,
            "champion": champion or "none (the first candidate bootstraps it)",
            "users": len(users),
            "served_rows_left_out": served_rows_left_out,
        }
        for role, reason in unloadable.items():
            metadata[f"{role}_does_not_load"] = reason
        if repaired:
            metadata["champion_repaired"] = dg.MetadataValue.json(repaired)
        for role, figures in results.items():
            metadata.update({f"{role}/{name}": float(value) for name, value in figures.items()})
        metadata[f"popularity/recall@{CANARY_K}"] = float(popularity[f"recall@{CANARY_K}"])
        metadata["metrics"] = table_metadata(
            [
                {"metric": name, **{role: float(results[role].get(name, float("nan"))) for role in results}}
                for name in sorted(results.get("candidate", {}))
            ],
            {"metric": "string", **{role: "float" for role in results}},
        )
        return dg.MaterializeResult(metadata=metadata)

    return canary_evaluation


def canary_gate_check(surface: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey([surface, "canary_evaluation"]),
        name="canary_gate",
        blocking=True,
        description="Blocks promotion unless the candidate clears the absolute floors, is within tolerance of the "
        "champion on every guarded metric (retrieval recall, and ranking: slate AUC and NDCG@10), and "
        "trained on data no older than the champion's. Records every rule's candidate and champion "
        "figures and the margin to its threshold.",
    )
    def canary_gate(
        context: dg.AssetCheckExecutionContext,
        config: CanaryGateConfig,
        lake: DataLakeResource,
        vocabulary: VocabularyResource,
    ) -> dg.AssetCheckResult:
        from serving.evaluation.canary import gate_rules

        day = partition_day(context.op_execution_context)
        state = lifecycle_state(lake)
        canary = state.read("canary", surface, day)
        through = canary.get("data_through", {})
        unloadable = canary.get("unloadable") or {}
        policy = config.policy(vocabulary.load().guarded)
        rules = gate_rules(
            canary["metrics"].get("candidate", {}),
            canary["metrics"].get("champion"),
            policy,
            candidate_data_through=date.fromisoformat(through["candidate"]) if through.get("candidate") else None,
            champion_data_through=date.fromisoformat(through["champion"]) if through.get("champion") else None,
        )
        reasons = [r.reason for r in rules if not r.passed]
        if "candidate" in unloadable:
            reasons = [f"the candidate does not load: {unloadable['candidate']}"]
        passed = not reasons
        overrides = config.overrides()
        if overrides:
            context.log.warning(
                f"{surface}/canary_gate on {day}: run config overrides the deployment's gate: {overrides}"
            )
        state.write(
            {**canary, "passed": passed, "reasons": reasons, "gate_overrides": overrides}, "canary", surface, day
        )
        metadata = {
            "candidate": canary["candidate"],
            "champion": canary["champion"] or "none",
            "rules": table_metadata(
                [asdict(r) for r in rules],
                {
                    "rule": "string",
                    "metric": "string",
                    "candidate": "float",
                    "champion": "float",
                    "threshold": "float",
                    "margin": "float",
                    "passed": "bool",
                },
            ),
            "gate_policy": dg.MetadataValue.json(asdict(policy)),
            "overridden_by_run_config": dg.MetadataValue.json(overrides),
        }
        for r in rules:
            metadata[f"margin/{r.metric}"] = r.margin
        description = "candidate passes the gate" if passed else "; ".join(reasons)
        if passed and "champion" in unloadable:
            description += (
                f" (judged on the floors alone: the champion does not load: {unloadable['champion']}; "
                "serving falls back to an earlier champion until this candidate replaces it)"
            )
        if overrides:
            description = f"[run config overrides the deployment's gate: {', '.join(overrides)}] {description}"
        return dg.AssetCheckResult(
            passed=passed, severity=dg.AssetCheckSeverity.ERROR, description=description, metadata=metadata
        )

    return canary_gate


canary_evaluations = [canary_evaluation_asset(surface) for surface in SETTINGS.surfaces]
canary_gates = [canary_gate_check(surface) for surface in SETTINGS.surfaces]
