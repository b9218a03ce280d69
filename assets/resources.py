"""Typed resources: where events come from, where the data lake is, the Feast store, S3 and the
training plan. `build_resources` is the one place the environment reaches them: a setting whose
variable is set is handed to Dagster as `dg.EnvVar` (resolved when a run starts, shown as such in
the UI, never stored in run config); an unset one takes the deployment default from
`defs/config.py`. Credentials are never fields here: S3 credentials reach boto3 from the
environment only.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from assets.config import EMBEDDED_WORLD, SETTINGS, Settings
from feature_pipeline.store import CODES_FILE
from storage.paths import deployment_prefix
from training.plan import TrainingPlan

_PLAN = TrainingPlan()


class EventSourceResource(dg.ConfigurableResource):
    """The event source the ingestion reads (movielens-1m | movielens-100k | simulated | parquet)."""

    source: str
    cache_dir: str
    parquet_location: str | None = None
    start_date: str = EMBEDDED_WORLD.start_date.isoformat()  # the source's first day ...
    # ... and how many days it has: the simulated world's clock (the days it has produced); for a
    # parquet source the span its rows are assigned to (None: the data or its files tell)
    n_days: int | None = EMBEDDED_WORLD.n_days
    sim_seed: int = EMBEDDED_WORLD.seed
    sim_users: int = EMBEDDED_WORLD.n_users
    sim_items: int = EMBEDDED_WORLD.n_items
    sim_events_per_day: int = EMBEDDED_WORLD.events_per_day
    sim_drift_day: str | None = None
    sim_drift_kind: str = EMBEDDED_WORLD.drift_kind
    sim_world_dir: str | None = None  # closed loop: the days the world played (pinrec-ops live)

    _source: Any = PrivateAttr(default=None)

    def world(self):
        """The simulated world's config (world.simulator.SimulatorConfig)."""
        from dataclasses import replace

        return replace(
            EMBEDDED_WORLD,
            seed=self.sim_seed,
            n_users=self.sim_users,
            n_items=self.sim_items,
            events_per_day=self.sim_events_per_day,
            start_date=date.fromisoformat(self.start_date),
            n_days=self.n_days or EMBEDDED_WORLD.n_days,
            drift_kind=self.sim_drift_kind,
            drift_day=date.fromisoformat(self.sim_drift_day) if self.sim_drift_day else None,
        )

    def day_status(self, day: date, s3_client=None) -> tuple[bool, str]:
        """(arrived, reason): whether the source has the day's data yet, and if not, why not."""
        from events.sources import describe_days

        source = self.open(s3_client=s3_client)
        if source.has_day(day):
            return True, f"{self.source} has {day}"
        if self.source == "simulated":
            return False, (
                f"the simulated world has not produced {day} yet: its clock covers "
                f"{describe_days(source.days())} (pinrec-ops live advances it)"
            )
        days = source.event_days() if self.source == "parquet" else source.days()
        if days and days[-1] > day:  # later days have arrived: a gap in the log, not a late night
            return False, f"{day}: no events in the log, skipped (it has {describe_days(days)})"
        return False, f"day {day} has not arrived in the {self.source} source (it has {describe_days(days)})"

    def missing_days(self, days: list[date], s3_client=None) -> list[date]:
        """The days of `days` the source has no events for (events.sources.missing_days)."""
        from events.sources import missing_days

        return missing_days(self.open(s3_client=s3_client), days)

    def catalogue_size(self) -> int | None:
        """Items in the catalogue, when the source knows it (the simulated world does)."""
        return self.sim_items if self.source == "simulated" else None

    def open(self, s3_client=None):
        """The source object (events.sources, or world.source for the simulated world), built
        once per run."""
        if self._source is None:
            if self.source == "simulated":
                from world.source import SimulatedSource

                self._source = SimulatedSource(self.world(), world_dir=self.sim_world_dir)
            else:
                from events.sources import make_source

                first = date.fromisoformat(self.start_date)
                self._source = make_source(
                    self.source,
                    cache_dir=Path(self.cache_dir),
                    parquet_location=self.parquet_location,
                    s3_client=s3_client,
                    days=[first + timedelta(days=i) for i in range(self.n_days)] if self.n_days else None,
                )
        return self._source


class VocabularyResource(dg.ConfigurableResource):
    """The deployment's vocabulary (events.vocabulary): surfaces, outcomes, what they mean, and
    their codes, which extend the code ledger recorded with the features (`ledger`)."""

    file: str
    ledger: str

    _vocabulary: Any = PrivateAttr(default=None)

    def load(self):
        """The Vocabulary (read once per run; its codes extend the recorded ledger)."""
        if self._vocabulary is None:
            from events.vocabulary import load_vocabulary

            self._vocabulary = load_vocabulary(Path(self.file), Path(self.ledger))
        return self._vocabulary

    def record(self):
        """Record the vocabulary's codes in the ledger (refused when they disagree with it);
        returns the Vocabulary."""
        from events.vocabulary import record_codes

        vocabulary = self.load()
        record_codes(vocabulary.codes, Path(self.ledger), vocabulary.label)
        return vocabulary


class DataLakeResource(dg.ConfigurableResource):
    """The local event table and quarantine (events.table.EventTable), and the engine that
    computes its feature tables (feature_pipeline.engines: local, or dask)."""

    root: str
    feature_engine: str = "local"
    dask_scheduler: str | None = None
    dask_workers: int = 2

    def table(self):
        from events.table import EventTable

        return EventTable(Path(self.root))

    def engine(self):
        from feature_pipeline.engines import FeatureEngine

        return FeatureEngine(
            self.feature_engine, dask_scheduler=self.dask_scheduler or None, dask_workers=self.dask_workers
        )

    def feature_tables(self, day, codes=None):
        """The day's three offline tables (outcome and surface codes: `codes`, default the
        built-in data's), computed on the configured engine."""
        from events.contract import BUILTIN_CODES
        from feature_pipeline.engines import compute_feature_tables

        return compute_feature_tables(self.table(), day, self.engine(), codes or BUILTIN_CODES)


class FeastResource(dg.ConfigurableResource):
    """The Feast feature store: registry, online store and offline tables under `data_dir`."""

    data_dir: str
    config_file: str

    _store: Any = PrivateAttr(default=None)

    def settings(self):
        from feature_pipeline.store import FeastSettings

        return FeastSettings(data_dir=Path(self.data_dir), config_file=Path(self.config_file))

    def store(self):
        """The FeatureStore (opened lazily: importing feast takes seconds)."""
        if self._store is None:
            from feature_pipeline.store import open_store

            self._store = open_store(self.settings())
        return self._store


class S3Resource(dg.ConfigurableResource):
    """The artifact bucket. Endpoint, bucket and prefix are configuration; credentials come only
    from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or boto3's default chain."""

    endpoint_url: str | None = None
    bucket: str = "pinrec"
    prefix: str = "pinrec-ops"
    deployment: str = ""  # the deployment this registry belongs to (storage.paths), recorded in its manifests

    _client: Any = PrivateAttr(default=None)

    def s3_settings(self):
        from dataclasses import replace

        from storage.s3 import S3Settings

        return replace(
            S3Settings.from_env(),
            endpoint_url=self.endpoint_url or None,
            bucket=self.bucket,
            prefix=self.prefix.strip("/"),
        )

    def client(self):
        if self._client is None:
            from storage.s3 import ensure_bucket, make_client

            self._client = make_client(self.s3_settings())
            ensure_bucket(self._client, self.bucket)
        return self._client

    def uri(self, *parts: str) -> str:
        return self.s3_settings().uri(*parts)

    def registry(self):
        """The model/index version registry (serving.registry.store) in this bucket and prefix."""
        from serving.service.checks import checked_registry

        return checked_registry(self.s3_settings(), self.client())

    def key(self, *parts: str) -> str:
        return self.s3_settings().key(*parts)


class TrainingResource(dg.ConfigurableResource):
    """Model size and training budget for pretraining and per-surface fine-tuning: the fields of
    `training.plan.TrainingPlan`, whose defaults fit the embedded default (a simulated world on 2
    CPU cores in minutes); raise them for real data (PINREC_TRAIN_D_MODEL, ..._PRETRAIN_EPOCHS)."""

    d_model: int = _PLAN.d_model
    layers: int = _PLAN.layers
    heads: int = _PLAN.heads
    max_len: int = _PLAN.max_len
    batch_size: int = _PLAN.batch_size
    pretrain_epochs: int = _PLAN.pretrain_epochs
    finetune_epochs: int = _PLAN.finetune_epochs
    pretrain_min_steps: int = _PLAN.pretrain_min_steps
    finetune_min_steps: int = _PLAN.finetune_min_steps
    warmup_fraction: float = _PLAN.warmup_fraction
    lr: float = _PLAN.lr
    finetune_lr: float = _PLAN.finetune_lr
    seed_items: bool = _PLAN.seed_items
    co_impression_weight: float = _PLAN.co_impression_weight
    seed_norm: float = _PLAN.seed_norm
    exposure_bias: bool = _PLAN.exposure_bias
    exposure_from_impressions: bool = _PLAN.exposure_from_impressions
    finetune_days: int = _PLAN.finetune_days
    hard_negatives: int = _PLAN.hard_negatives
    sampled_softmax: bool = _PLAN.sampled_softmax
    ranking: bool = _PLAN.ranking
    rank_weight: float = _PLAN.rank_weight
    seed: int = _PLAN.seed
    threads: int = _PLAN.threads
    models_dir: str = "models"

    def plan(self) -> TrainingPlan:
        return TrainingPlan(**{name: getattr(self, name) for name in TrainingPlan.field_names()})

    def configs(self, n_items: int = 0, codes=None):
        """(model, data, loss, train) configs of pretraining; fine-tuning overrides the epochs.
        `codes`: the vocabulary's (events.contract.EventCodes; default the built-in data's)."""
        return self.plan().configs(n_items) if codes is None else self.plan().configs(n_items, codes)

    def optim_config(self, stage: str):
        """training.module.OptimConfig of "pretrain" or "finetune" (TrainingPlan.optim_config)."""
        return self.plan().optim_config(stage)

    def ranking_config(self):
        """training.ranking.RankingConfig of the plan (the ranking head's loss weight)."""
        return self.plan().ranking_config()


def _env(name: str, default: Any, cast: str = "str") -> Any:
    """`dg.EnvVar(name)` when the variable is set (resolved at run time), else `default`."""
    if not os.environ.get(name):
        return default
    return {"str": dg.EnvVar(name), "int": dg.EnvVar.int(name)}[cast]


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location. With explicit `settings` (tests, benchmarks) the values
    are plain; from the environment they are `dg.EnvVar`s where a variable is set."""
    s = settings or SETTINGS
    from_env = settings is None
    env = _env if from_env else (lambda name, default, cast="str": default)
    plan = s.training
    return {
        "event_source": EventSourceResource(
            source=env("PINREC_SOURCE", s.source),
            cache_dir=str(s.cache_dir),
            parquet_location=env("PINREC_PARQUET_LOCATION", s.parquet_location),
            start_date=s.start_date.isoformat(),
            n_days=(s.end_date - s.start_date).days + 1 if s.end_date else None,
            sim_seed=env("PINREC_SIM_SEED", s.world.seed, "int"),
            sim_users=env("PINREC_SIM_USERS", s.world.n_users, "int"),
            sim_items=env("PINREC_SIM_ITEMS", s.world.n_items, "int"),
            sim_events_per_day=env("PINREC_SIM_EVENTS_PER_DAY", s.world.events_per_day, "int"),
            sim_drift_day=env("PINREC_SIM_DRIFT_DAY", s.world.drift_day.isoformat() if s.world.drift_day else None),
            sim_drift_kind=env("PINREC_SIM_DRIFT_KIND", s.world.drift_kind),
            sim_world_dir=str(s.world_dir) if s.world_dir else None,
        ),
        "lake": DataLakeResource(
            root=str(s.data_dir / "lake"),
            feature_engine=s.feature_engine.name,
            dask_scheduler=s.feature_engine.dask_scheduler,
            dask_workers=s.feature_engine.dask_workers,
        ),
        "vocabulary": VocabularyResource(file=str(s.vocabulary.path), ledger=str(s.data_dir / "feast" / CODES_FILE)),
        "training": TrainingResource(models_dir=str(s.data_dir / "models"), **plan.to_dict()),
        "feast": FeastResource(data_dir=str(s.data_dir / "feast"), config_file=str(s.feast_config)),
        "s3": S3Resource(
            endpoint_url=env("PINREC_S3_ENDPOINT_URL", os.environ.get("PINREC_S3_ENDPOINT_URL") or None),
            bucket=env("PINREC_S3_BUCKET", os.environ.get("PINREC_S3_BUCKET") or "pinrec"),
            prefix=env("PINREC_S3_PREFIX", os.environ.get("PINREC_S3_PREFIX") or deployment_prefix(s.deployment)),
            deployment=s.deployment,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
