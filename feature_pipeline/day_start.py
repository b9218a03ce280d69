"""Users' sequences as the online store held them when a day began: Feast's point-in-time join,
asked once per day for every user active that day and kept on disk.

Feast's file offline store reads the whole ``user_sequence`` table for a historical retrieval
(on a 10^6-event day of 20,000 users, about 40 s however few users are asked for), and each
surface's canary evaluation asks for the start of the same day. The first one asks for every
user the caller names (the day's active users), later ones read the file. The file's name carries
a digest of the offline table's files of the days before (name, size, modification time), so
features rewritten for an earlier day give a new file; the day's older files are removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from pathlib import Path

import pandas as pd

from events.sources import write_parquet
from feature_pipeline.store import OFFLINE_TABLES, training_examples


def offline_digest(data_dir: str | Path, day: date) -> str:
    """A digest of the ``user_sequence`` offline files of the days before `day`."""
    folder = Path(data_dir) / OFFLINE_TABLES["user_sequence"]
    parts = []
    for path in sorted(folder.glob("*.parquet")):
        if path.stem < day.isoformat():
            stat = path.stat()
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def day_start_examples(
    store, data_dir: str | Path, day: date, users: Iterable[int], cache_dir: str | Path
) -> pd.DataFrame:
    """`training_examples` of every user in `users` at the first instant of `day` (one row per
    user; a user without features before the day has an empty sequence), from the day's file in
    `cache_dir` when it holds them all, else asked of Feast and written there."""
    wanted = sorted({int(u) for u in users})
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{day.isoformat()}-{offline_digest(data_dir, day)}.parquet"
    if path.exists():
        cached = pd.read_parquet(path)
        if set(wanted) <= set(cached["user_id"].tolist()):
            return cached[cached["user_id"].isin(wanted)].reset_index(drop=True)
    start = pd.Timestamp(datetime.combine(day, time(0), tzinfo=UTC))
    rows = training_examples(store, pd.DataFrame({"user_id": wanted, "event_ts": start}))
    for stale in cache_dir.glob(f"{day.isoformat()}-*.parquet"):
        if stale != path:
            stale.unlink(missing_ok=True)
    write_parquet(rows, path)
    return rows


__all__ = ["day_start_examples", "offline_digest"]
