"""Feast online read latency, sqlite vs Redis, for 1 user and for 1,000 users.

    nice -n 19 .venv/bin/python -m benchmarks.online_latency                 # 20k users x 200 events
    nice -n 19 .venv/bin/python -m benchmarks.online_latency --users 2000    # smaller, quicker

`measure_online_latency(work_dir)` builds the same `user_sequence` offline table (synthetic
200-event histories, `benchmarks.serving.make_users`) under two Feast data dirs, materializes it
through Feast into the embedded sqlite online store and into the production profile's Redis
online store (a local `redis-server` on 127.0.0.1, no persistence, started and stopped here), then
times the serving read (`get_online_features(...).to_dict()` of the five user_sequence features,
as serving.service.app.FeastFeatures does) for one random user and for 1,000 random users.

Rows: `online-sqlite-1u`, `online-sqlite-1000u`, `online-redis-1u`, `online-redis-1000u` with
`p50_ms`, `p99_ms` (over `reads` timed calls after a warm-up), `users` and `seq_len` (the
store's size), `materialize_s` (that store's materialization of the whole table) and `store_mb`
(sqlite: the online_store.db file; Redis: `used_memory`). benchmarks/scale.py adds the rows to
its table; this command only prints them.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.results import argument_parser, print_table
from benchmarks.serving import make_users
from devstack.redis import RedisServer
from feature_pipeline.redis_store import fill_store, open_redis_store
from feature_pipeline.store import USER_SEQUENCE_FEATURES, FeastSettings, open_store
from feature_pipeline.tables import ENTITY_TIMESTAMP

DAY = date(2026, 1, 1)
N_ITEMS = 100_000
READS = {1: 300, 1000: 30}  # timed reads per batch size
WARMUP = {1: 20, 1000: 3}


def user_sequence_table(n_users: int, seq_len: int) -> pd.DataFrame:
    """The offline user_sequence table of `DAY`: one synthetic history per user."""
    users = make_users(n_users, N_ITEMS, seq_len)
    table = pd.DataFrame([{"user_id": u, **row} for u, row in users.items()])
    stamp = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) + pd.Timedelta(hours=12)
    table[ENTITY_TIMESTAMP] = pd.Timestamp(stamp).as_unit("us")
    return table


def read_users(store, user_ids: list[int]) -> dict:
    """The serving read: the user_sequence features of these users, as a dict of lists."""
    return store.get_online_features(
        features=USER_SEQUENCE_FEATURES, entity_rows=[{"user_id": int(u)} for u in user_ids]
    ).to_dict()


def time_reads(store, n_users: int, batch: int, seed: int) -> tuple[float, float]:
    """(p50, p99) milliseconds of reading `batch` random known users."""
    rng = np.random.default_rng(seed)
    for _ in range(WARMUP[batch]):
        read_users(store, rng.choice(n_users, batch, replace=False).tolist())
    times = []
    for _ in range(READS[batch]):
        ids = rng.choice(n_users, batch, replace=False).tolist()
        t0 = time.perf_counter()
        got = read_users(store, ids)
        times.append((time.perf_counter() - t0) * 1000)
        if any(v is None for v in got["seq_item_ids"]):
            raise RuntimeError(f"{store.config.online_store.type}: a known user read as missing")
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _store_mb(store, redis_server: RedisServer | None) -> float:
    if redis_server is None:
        return (Path(store.repo_path) / store.config.online_store.path).stat().st_size / 2**20
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        return client.info("memory")["used_memory"] / 2**20
    finally:
        client.close()


def measure_online_latency(work_dir: Path, n_users: int = 20_000, seq_len: int = 200) -> list[dict]:
    """Rows online-{sqlite,redis}-{1u,1000u} (see the module docstring); work files under work_dir."""
    if n_users < max(READS):
        raise ValueError(f"n_users must be at least {max(READS)} (the largest read), got {n_users}")
    work_dir = Path(work_dir)
    table = user_sequence_table(n_users, seq_len)
    rows = []
    with RedisServer() as redis_server:
        stores = {
            "sqlite": (lambda d: open_store(FeastSettings(data_dir=d)), None),
            "redis": (lambda d: open_redis_store(d, redis_server.connection_string), redis_server),
        }
        for name, (open_one, server) in stores.items():
            data_dir = work_dir / name
            store = open_one(data_dir)
            t0 = time.perf_counter()
            fill_store(store, data_dir, {DAY: {"user_sequence": table}})
            materialize_s = time.perf_counter() - t0
            size = {
                "users": n_users,
                "seq_len": seq_len,
                "materialize_s": round(materialize_s, 1),
                "store_mb": round(_store_mb(store, server), 1),
            }
            for batch, label in ((1, "1u"), (1000, "1000u")):
                p50, p99 = time_reads(store, n_users, batch, seed=batch)
                rows.append(
                    {
                        "name": f"online-{name}-{label}",
                        "p50_ms": round(p50, 2),
                        "p99_ms": round(p99, 2),
                        "reads": READS[batch],
                        **size,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argument_parser(__file__, __doc__)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seq-len", type=int, default=200)
    parser.add_argument("--work-dir", type=Path, help="default: a temporary folder, removed afterwards")
    args = parser.parse_args(argv)
    if args.work_dir:
        rows = measure_online_latency(args.work_dir, args.users, args.seq_len)
    else:
        with tempfile.TemporaryDirectory(prefix="online-latency-") as tmp:
            rows = measure_online_latency(Path(tmp), args.users, args.seq_len)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
