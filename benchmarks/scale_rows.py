"""The scale benchmark's rows, sizes and targets (benchmarks/scale.py measures them,
benchmarks/scale_report.py reports them)."""

from datetime import date
from pathlib import Path

NAME = "scale"
ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "bench" / NAME
DOC = ROOT / "docs" / "scale.md"
DAY = date(2026, 1, 1)
USERS, ITEMS = 20_000, 50_000
EVENT_ROWS = {"events-1e6": 10**6, "events-1e7": 10**7, "events-1e8": 10**8}
INDEX_ROWS = {"index-1e5": (10**5, 256), "index-1e6": (10**6, 1024)}  # items, clusters (as serving)
TRAIN_ROWS = {"train-len50": 50, "train-len200": 200, "train-len1000": 1000}
TRAIN_TOKENS_PER_BATCH = 12_800
ENGINE_ROWS = {"features-engine-1e7": 10**7}  # the Dask engine's path (feature_pipeline.engines)
SHARDED_ROWS = {"index-sharded-1e6": (10**6, 1024, 4)}  # items, clusters, shards
CELERY_ROWS = ("celery-nightly",)
ROWS = [*EVENT_ROWS, *ENGINE_ROWS, *INDEX_ROWS, *SHARDED_ROWS, *TRAIN_ROWS, *CELERY_ROWS, "online"]
TARGETS = {"recall@100": 0.98, "events_per_s": 1e6, "workers_used": 2}
INGEST_TARGET_EVENTS_PER_S = 1e6  # ingest + validate, on this 2-core machine
PEAK_RSS_GROWTH_TARGET = 1.2  # events-1e8 peak_rss_mb <= 1.2 x events-1e7's
RECALL_GAP_TARGET = 0.001  # sharded recall equal to unsharded within this
EVENT_STAGES = ("generate", "ingest_validate", "features")
DEFAULT_CHUNK = 1_000_000
