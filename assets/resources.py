"""Typed resources: where events come from, where the data lake is, the Feast store, S3 and the
training plan, built from a `Settings` (`build_resources`). For the code location (`resources`,
when Dagster loads it) that is the one place the environment reaches them: a setting whose
variable is set is handed to Dagster as `dg.EnvVar` (resolved when a run starts, shown as such in
the UI, never stored in run config); an unset one takes the deployment default from
`assets/config.py`. Credentials are never fields here: S3 credentials reach boto3 from the
environment only.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr, create_model

from assets.config import EMBEDDED_WORLD, WORLD_KNOBS, Settings, load_settings, world_variable
from feature_pipeline.store import CODES_FILE
from storage.s3 import DEFAULT_BUCKET, DEFAULT_PREFIX
from training.plan import TrainingPlan
from world.parameters import SimulatorConfig


def _config_type(hint):
    """The Dagster config type of a dataclass field's type: Dagster's config has no tuples, dates or
    Literals, so a tuple is a list, a date an ISO string and a Literal a string."""
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]
    if hint is date:
        return str
    if typing.get_origin(hint) is typing.Literal:
        return str
    if date in typing.get_args(hint):  # date | None
        return str | None
    return hint


def _config_value(value):
    """A dataclass field's value in Dagster config (`_config_type`)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _field_value(hint, value):
    """A config value back as the dataclass field's type (`_config_type`)."""
    if value is not None and (hint is date or date in typing.get_args(hint)):
        return date.fromisoformat(value)
    return tuple(value) if typing.get_origin(hint) is tuple else value


# The world's knobs the event source resource holds, as its config fields (sim_<name> of
# assets.config.WORLD_KNOBS); the world's span is the resource's own start_date and n_days.
_SIM_FIELDS = {field: f"sim_{name}" for field, name in WORLD_KNOBS.items() if field != "n_days"}
_WORLD_TYPES = typing.get_type_hints(SimulatorConfig)


def _world_knobs() -> type[dg.ConfigurableResource]:
    """The event source resource's world knobs (_SIM_FIELDS), EMBEDDED_WORLD's values their defaults."""
    return create_model(
        "SimulatedWorldKnobs",
        __base__=dg.ConfigurableResource,
        **{
            knob: (_config_type(_WORLD_TYPES[field]), _config_value(getattr(EMBEDDED_WORLD, field)))
            for field, knob in _SIM_FIELDS.items()
        },
    )


class EventSourceResource(_world_knobs()):
    """The event source the ingestion reads (movielens-1m | movielens-100k | simulated | parquet)."""

    source: str
    cache_dir: str
    parquet_location: str | None = None
    start_date: str = EMBEDDED_WORLD.start_date.isoformat()  # the source's first day ...
    # ... and how many days it has: the simulated world's clock (the days it has produced); for a
    # parquet source the span its rows are assigned to (None: the data or its files tell)
    n_days: int | None = EMBEDDED_WORLD.n_days
    # the simulated world's knobs: sim_seed, sim_users, ... (assets.config.WORLD_KNOBS)
    sim_world_dir: str | None = None  # closed loop: the days the world played (pinrec-ops live)

    _source: Any = PrivateAttr(default=None)

    def world(self) -> SimulatorConfig:
        """The simulated world's config (world.simulator.SimulatorConfig): EMBEDDED_WORLD with this
        resource's knobs and span."""
        return replace(
            EMBEDDED_WORLD,
            **{field: _field_value(_WORLD_TYPES[field], getattr(self, knob)) for field, knob in _SIM_FIELDS.items()},
            start_date=date.fromisoformat(self.start_date),
            n_days=self.n_days or EMBEDDED_WORLD.n_days,
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
    bucket: str = DEFAULT_BUCKET
    prefix: str = DEFAULT_PREFIX
    deployment: str = ""  # the deployment this registry belongs to (storage.paths), recorded in its manifests

    _client: Any = PrivateAttr(default=None)

    def s3_settings(self):
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


def plan_config(plan: type = TrainingPlan) -> type[dg.Config]:
    """The fields of a plan dataclass (`training.plan.TrainingPlan`) as a Dagster `Config`: the
    same names, types and defaults, generated here so that a field added to the plan reaches the
    resource, the run config and the UI's launchpad with no edit to this module (a tuple field is
    a list in the config: Dagster's config has no tuples; `to_plan` turns it back)."""
    hints = typing.get_type_hints(plan)

    def default(field):
        return _config_value(field.default if field.default is not dataclasses.MISSING else field.default_factory())

    return create_model(
        f"{plan.__name__}Config",
        __base__=dg.Config,
        __doc__=f"The fields of {plan.__module__}.{plan.__name__} (generated from it).",
        **{f.name: (_config_type(hints[f.name]), default(f)) for f in dataclasses.fields(plan)},
    )


def to_plan(config: dg.Config, plan: type = TrainingPlan):
    """The plan dataclass of a `plan_config` (lists back to tuples where the plan has tuples)."""
    hints = typing.get_type_hints(plan)
    return plan(**{f.name: _field_value(hints[f.name], getattr(config, f.name)) for f in dataclasses.fields(plan)})


TrainingPlanConfig = plan_config(TrainingPlan)


class TrainingResource(dg.ConfigurableResource):
    """Model size and training budget for pretraining and per-surface fine-tuning: `plan` holds the
    fields of `training.plan.TrainingPlan` (generated from it: `plan_config`), whose defaults fit
    the embedded default (a simulated world on 2 CPU cores in minutes); raise them for real data
    (PINREC_TRAIN_D_MODEL, ..._PRETRAIN_EPOCHS) or in a run's config (`training: plan: ...`)."""

    plan: TrainingPlanConfig = TrainingPlanConfig()
    models_dir: str = "models"

    @classmethod
    def of(cls, plan: TrainingPlan, models_dir: str = "models") -> TrainingResource:
        return cls(plan=TrainingPlanConfig(**dataclasses.asdict(plan)), models_dir=models_dir)

    def with_plan(self, **changes: Any) -> TrainingResource:
        """This resource with some fields of its plan changed (tests and benchmarks size it down)."""
        return TrainingResource.of(dataclasses.replace(self.training_plan(), **changes), self.models_dir)

    def training_plan(self) -> TrainingPlan:
        return to_plan(self.plan)

    def configs(self, n_items: int = 0, codes=None):
        """(model, data, loss, train) configs of pretraining; fine-tuning overrides the epochs.
        `codes`: the vocabulary's (events.contract.EventCodes; default the built-in data's)."""
        plan = self.training_plan()
        return plan.configs(n_items) if codes is None else plan.configs(n_items, codes)

    def optim_config(self, stage: str):
        """training.module.OptimConfig of "pretrain" or "finetune" (TrainingPlan.optim_config)."""
        return self.training_plan().optim_config(stage)

    def ranking_config(self):
        """training.ranking.RankingConfig of the plan (the ranking head's loss weight)."""
        return self.training_plan().ranking_config()


def _env(name: str, default: Any, cast: str = "str") -> Any:
    """`dg.EnvVar(name)` when the variable is set (resolved at run time), else `default`."""
    if not os.environ.get(name):
        return default
    return {"str": dg.EnvVar(name), "int": dg.EnvVar.int(name)}[cast]


def build_resources(settings: Settings, *, from_environment: bool = False) -> dict[str, dg.ConfigurableResource]:
    """The resources of a graph of `settings`. The values are plain (tests, benchmarks, the CLI's
    runs in process); `from_environment` (the code location, whose `settings` were read from the
    environment) hands a setting whose variable is set to Dagster as a `dg.EnvVar`."""
    s = settings
    env = _env if from_environment else (lambda name, default, cast="str": default)
    return {
        "event_source": EventSourceResource(
            source=env("PINREC_SOURCE", s.source),
            cache_dir=str(s.cache_dir),
            parquet_location=env("PINREC_PARQUET_LOCATION", s.parquet_location),
            start_date=s.start_date.isoformat(),
            n_days=(s.end_date - s.start_date).days + 1 if s.end_date else None,
            **{
                knob: env(
                    world_variable(field),
                    _config_value(getattr(s.world, field)),
                    "int" if _WORLD_TYPES[field] is int else "str",
                )
                for field, knob in _SIM_FIELDS.items()
            },
            sim_world_dir=str(s.world_dir) if s.world_dir else None,
        ),
        "lake": DataLakeResource(
            root=str(s.data_dir / "lake"),
            feature_engine=s.feature_engine.name,
            dask_scheduler=s.feature_engine.dask_scheduler,
            dask_workers=s.feature_engine.dask_workers,
        ),
        "vocabulary": VocabularyResource(file=str(s.vocabulary.path), ledger=str(s.data_dir / "feast" / CODES_FILE)),
        "training": TrainingResource.of(s.training, models_dir=str(s.data_dir / "models")),
        "feast": FeastResource(data_dir=str(s.data_dir / "feast"), config_file=str(s.feast_config)),
        "s3": S3Resource(
            endpoint_url=env("PINREC_S3_ENDPOINT_URL", os.environ.get("PINREC_S3_ENDPOINT_URL") or None),
            bucket=env("PINREC_S3_BUCKET", os.environ.get("PINREC_S3_BUCKET") or DEFAULT_BUCKET),
            prefix=env("PINREC_S3_PREFIX", s.key_prefix),
            deployment=s.deployment,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(load_settings(), from_environment=True))
