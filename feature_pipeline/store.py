"""The Feast store of pinrec-ops: open it, apply the repo, write offline tables, materialize
a day, read online features and build point-in-time-correct training examples.

`feast` is imported inside functions: it takes ~9 s (it imports torch), and the Dagster code
location must load fast.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from events.contract import BUILTIN_CODES, TIMESTAMP_DTYPE, EventCodes
from events.ingest import day_window
from events.sources import write_parquet
from feature_pipeline.tables import ENTITY_TIMESTAMP

log = logging.getLogger("feature_pipeline.store")

if TYPE_CHECKING:
    from feast import FeatureStore

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
DEFAULT_CONFIG = FEATURE_REPO / "feature_store.yaml"
# Feature view name -> offline table folder; the same relative paths as feature_repo/data_sources.py.
OFFLINE_TABLES = {
    "user_sequence": "offline/user_sequence",
    "item_stats": "offline/item_stats",
    "item_surface_stats": "offline/item_surface_stats",
}
# The vocabulary's code ledger, recorded with the features in the Feast data directory; the
# feature views are built from it (feature_repo/features.py: the per-outcome and per-surface
# columns) and tagged with it (`feature_codes`).
CODES_FILE = "codes.json"
CODES_TAG = "pinrec/codes"
USER_SEQUENCE_FEATURES = [
    "user_sequence:seq_item_ids",
    "user_sequence:seq_outcomes",
    "user_sequence:seq_surfaces",
    "user_sequence:seq_timestamps_us",
    "user_sequence:seq_shown_item_ids",
    "user_sequence:seq_length",
]


@dataclass(frozen=True)
class FeastSettings:
    data_dir: Path  # registry, sqlite online store and offline tables live here
    config_file: Path = DEFAULT_CONFIG  # feature_store.yaml (or the production profile)


def load_repo_config(settings: FeastSettings):
    """RepoConfig from the yaml profile, with `${VAR}` expanded from the environment and
    relative paths resolved against settings.data_dir."""
    from feast.repo_config import RepoConfig

    raw = yaml.safe_load(os.path.expandvars(Path(settings.config_file).read_text()))
    unresolved = [k for k, v in _flatten(raw) if isinstance(v, str) and "${" in v]
    if unresolved:
        raise ValueError(f"{settings.config_file}: unset environment variables in {unresolved}")
    config = RepoConfig(**raw)
    config.repo_path = Path(settings.data_dir)
    return config


def _flatten(d, prefix=""):
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def open_store(settings: FeastSettings) -> FeatureStore:
    from feast import FeatureStore

    # Feast's file store runs on dask, which warns about pandas deprecations on every read.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"dask\..*")
    # ...and names every persisted frame by pickling its list columns: a faster token for them
    from feature_pipeline.dask_tokens import install as install_dask_tokens

    install_dask_tokens()

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=load_repo_config(settings), repo_path=str(settings.data_dir))


def store_locations(store: FeatureStore) -> str:
    """Where the store's registry and online store live, for error messages."""
    repo = Path(store.repo_path)

    def resolve(location: str) -> str:
        return location if "://" in location else str(repo / location)

    online = store.config.online_store
    online_path = getattr(online, "path", None)
    return f"Feast registry {resolve(str(store.config.registry.path))}, online store {online.type}" + (
        f" {resolve(str(online_path))}" if online_path else ""
    )


@contextmanager
def naming_the_store(store: FeatureStore, action: str) -> Iterator[None]:
    """Add a note naming the registry and online store to any error while `action`: Feast's own
    messages (a protobuf DecodeError for a corrupt registry, a sqlite OperationalError for an
    unusable online store) do not say which file failed."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"while {action}: {store_locations(store)}")
        raise


def codes_path(data_dir: str | Path) -> Path:
    """The code ledger of the features under a Feast data directory."""
    return Path(data_dir) / CODES_FILE


def record_feature_codes(data_dir: str | Path, codes: EventCodes, vocabulary: str | None = None) -> Path:
    """Record `codes` in the ledger of the features under `data_dir` (refusing codes that
    disagree with the recorded ones: `events.vocabulary.VocabularyMismatchError`)."""
    from events.vocabulary import record_codes

    path = codes_path(data_dir)
    record_codes(codes, path, vocabulary)
    return path


@functools.cache
def _repo_module(name: str):
    """A module of feature_repo/ loaded from its file: the folder is a Feast repo (the plain `feast`
    CLI imports its files as top-level modules), not a package of the project."""
    spec = importlib.util.spec_from_file_location(f"feature_repo.{name}", FEATURE_REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def repo_objects(codes: Mapping[str, Any]) -> dict[str, list]:
    """feature_repo/'s definitions for a code ledger (`codes`, as `record_feature_codes` writes
    it): entities, data sources, feature views and services."""
    entities, data_sources = _repo_module("entities"), _repo_module("data_sources")
    views = _repo_module("features").feature_views(codes, entities.user, entities.item, data_sources.SOURCES)
    return {
        "entities": [entities.user, entities.item],
        "data_sources": list(data_sources.SOURCES.values()),
        "feature_views": list(views.values()),
        "feature_services": list(_repo_module("feature_services").feature_services(views).values()),
    }


def apply_repo(
    store: FeatureStore, codes: EventCodes = BUILTIN_CODES, vocabulary: str | None = None
) -> dict[str, list[str]]:
    """Register feature_repo/'s definitions (like `feast apply`) for the vocabulary's `codes`
    (recorded first in the store's code ledger); returns what was applied."""
    import json

    ledger = record_feature_codes(store.repo_path, codes, vocabulary)
    contents = repo_objects(json.loads(ledger.read_text()))
    objects = [obj for kind in contents.values() for obj in kind]
    with naming_the_store(store, "applying feature_repo/"):
        store.apply(objects)
    return {
        kind: sorted(obj.name for obj in contents[kind]) for kind in ("entities", "feature_views", "feature_services")
    }


def feature_codes(store: FeatureStore) -> dict[str, list[str]] | None:
    """The code mapping the applied features were written with ({"outcomes": names by code,
    "surfaces": ...}, the `user_sequence` view's tag), or None when the registry has none."""
    import json

    from feast.errors import FeatureViewNotFoundException

    try:
        view = store.get_feature_view("user_sequence")
    except FeatureViewNotFoundException:
        return None
    tag = view.tags.get(CODES_TAG)
    return json.loads(tag) if tag else None


def offline_table_path(settings: FeastSettings, view: str, day: date) -> Path:
    return Path(settings.data_dir) / OFFLINE_TABLES[view] / f"{day.isoformat()}.parquet"


def write_offline_tables(settings: FeastSettings, day: date, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write (or replace) the day's file of each offline table; a view without rows that day has
    no file. Every view empty means the day has no events (an outage upstream, not a quiet day):
    :class:`events.ingest.NoEventsError`, and the day's files are kept."""
    if tables and not any(len(df) for df in tables.values()):
        from events.ingest import NoEventsError

        raise NoEventsError(day, "every feature table of the day is empty")
    written = {}
    for view, df in tables.items():
        path = offline_table_path(settings, view, day)
        if len(df):
            write_parquet(df, path)
            written[view] = path
        else:
            path.unlink(missing_ok=True)
    return written


def materialize_days(store: FeatureStore, first: date, last: date, views: list[str] | None = None) -> None:
    """Load the rows stamped inside days first..last into the online store, in one pass: each
    entity ends with its newest row of the window, as if the days had been loaded one by one.
    Idempotent: re-running a window writes the same values."""
    start, _ = day_window(first)
    _, end = day_window(last)
    with naming_the_store(store, f"materializing {first} .. {last}"), feast_console_to_log():
        store.materialize(start_date=start, end_date=end, feature_views=views or list(OFFLINE_TABLES))


@contextmanager
def feast_console_to_log() -> Iterator[None]:
    """Feast's materialization prints to the console (colour codes, progress bars); its lines go
    to this module's logger at DEBUG instead, without the colour codes (`--verbose` shows them)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from storage.console import strip_ansi

    captured = io.StringIO()
    try:
        with redirect_stdout(captured), redirect_stderr(captured):
            yield
    finally:
        for line in strip_ansi(captured.getvalue()).replace("\r", "\n").splitlines():
            if line.strip():
                log.debug("feast: %s", line.strip())


def materialize_day(store: FeatureStore, day: date, views: list[str] | None = None) -> None:
    """Load the rows stamped inside `day` into the online store (idempotent for a given day)."""
    materialize_days(store, day, day, views)


def online_user_sequences(store: FeatureStore, user_ids: list[int]) -> pd.DataFrame:
    """The user_sequence features of each user, as the online store serves them (lists)."""
    response = store.get_online_features(
        features=USER_SEQUENCE_FEATURES, entity_rows=[{"user_id": int(u)} for u in user_ids]
    )
    return pd.DataFrame(response.to_dict())


def training_examples(store: FeatureStore, targets: pd.DataFrame) -> pd.DataFrame:
    """Join each target event (user_id, event_ts, ...) with the user's sequence as it was just
    before the event: point-in-time correct, so no example sees its own event or a later one.

    Targets whose user had no engagement before have an empty sequence (seq_length 0).
    """
    entity = targets.copy()
    entity[ENTITY_TIMESTAMP] = pd.to_datetime(entity["event_ts"], utc=True).astype(TIMESTAMP_DTYPE) - pd.Timedelta(
        microseconds=1
    )
    entity["_row"] = range(len(entity))
    job = store.get_historical_features(
        entity_df=entity[["user_id", ENTITY_TIMESTAMP, "_row"]], features=USER_SEQUENCE_FEATURES
    )
    joined = job.to_df()
    # Feast's file store drops entity rows whose only feature rows lie in their future, so the
    # join result is merged back onto every target: those targets get an empty sequence.
    feature_cols = [f.split(":")[1] for f in USER_SEQUENCE_FEATURES]
    out = entity.drop(columns=[ENTITY_TIMESTAMP]).merge(joined[["_row", *feature_cols]], on="_row", how="left")
    out = out.sort_values("_row").drop(columns=["_row"]).reset_index(drop=True)
    for col in ("seq_item_ids", "seq_outcomes", "seq_surfaces", "seq_timestamps_us", "seq_shown_item_ids"):
        out[col] = out[col].map(lambda v: list(v) if v is not None and not (isinstance(v, float)) else [])
    out["seq_length"] = out["seq_length"].fillna(0).astype("int64")
    return out
