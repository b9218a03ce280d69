"""The serving log: one row per served slot a user was shown, stored with the day beside the
event table (`<lake>/serving_log/date=YYYY-MM-DD/serving_log.parquet`).

| column     | type                 | meaning                                                        |
|------------|----------------------|----------------------------------------------------------------|
| user_id    | int64                | who was served                                                 |
| session_id | int64                | the session (as in the events)                                 |
| ts         | timestamp[us, UTC]   | when the slot was shown                                        |
| surface    | str                  | where                                                          |
| position   | int64                | rank in the served list (0 = top)                              |
| item_id    | int64                | what was served                                                |
| version    | str                  | the model version (or the baseline policy) that served it      |
| arm        | str                  | the experiment arm of the user                                 |
| served_by  | str                  | champion, canary, or the baseline's name                       |
| examined   | bool                 | whether the user looked at the slot (position bias)            |
| outcome    | str                  | what the impression got: `impression` (not engaged), or the    |
|            |                      | engagement (`click`, `save`, `hide`, ...)                      |
| propensity | float64              | P(the policy puts this item in this slot): 1 for a ranked      |
|            |                      | slot, share / catalogue size for a uniformly random            |
|            |                      | exploration slot (`serving.service.exploration`); logs from    |
|            |                      | before the column read 1                                       |

Events keep the event contract: a served impression is an ordinary `impression` row (plus its
engagement row); the serving log says which version, arm and position it came from.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from storage.files import atomic_path

SERVING_LOG_COLUMNS: tuple[str, ...] = (
    "user_id",
    "session_id",
    "ts",
    "surface",
    "position",
    "item_id",
    "version",
    "arm",
    "served_by",
    "examined",
    "outcome",
    "propensity",
)
TS_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")


def empty_serving_log() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype="int64"),
            "session_id": pd.Series([], dtype="int64"),
            "ts": pd.Series([], dtype=TS_DTYPE),
            "surface": pd.Series([], dtype=object),
            "position": pd.Series([], dtype="int64"),
            "item_id": pd.Series([], dtype="int64"),
            "version": pd.Series([], dtype=object),
            "arm": pd.Series([], dtype=object),
            "served_by": pd.Series([], dtype=object),
            "examined": pd.Series([], dtype=bool),
            "outcome": pd.Series([], dtype=object),
            "propensity": pd.Series([], dtype="float64"),
        }
    )


def conform_serving_log(df: pd.DataFrame | None) -> pd.DataFrame:
    """`df` with exactly the serving log's columns and dtypes (an empty log for None)."""
    if df is None or len(df) == 0:
        return empty_serving_log()
    if "propensity" not in df.columns:  # a log from before the column: every slot was ranked
        df = df.assign(propensity=1.0)
    missing = set(SERVING_LOG_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"serving log lacks columns {sorted(missing)}")
    out = df[list(SERVING_LOG_COLUMNS)].copy()
    for col in ("user_id", "session_id", "position", "item_id"):
        out[col] = out[col].astype("int64")
    for col in ("surface", "version", "arm", "served_by", "outcome"):
        out[col] = out[col].astype(str).astype(object)
    out["examined"] = out["examined"].astype(bool)
    out["propensity"] = out["propensity"].astype("float64")
    out["ts"] = pd.to_datetime(out["ts"], utc=True).astype(TS_DTYPE)
    return out


class ServingLogTable:
    """The serving log of each day under `<lake>/serving_log/`."""

    def __init__(self, lake_root: str | Path):
        self.root = Path(lake_root) / "serving_log"

    def path(self, day: date) -> Path:
        return self.root / f"date={day.isoformat()}" / "serving_log.parquet"

    def write_day(self, day: date, log: pd.DataFrame | None) -> Path:
        table = pa.Table.from_pandas(conform_serving_log(log), preserve_index=False)
        with atomic_path(self.path(day)) as tmp:
            pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=False)
        return self.path(day)

    def read_day(self, day: date) -> pd.DataFrame:
        path = self.path(day)
        return conform_serving_log(pd.read_parquet(path)) if path.exists() else empty_serving_log()

    def days(self) -> list[date]:
        return sorted(
            date.fromisoformat(p.parent.name.removeprefix("date=")) for p in self.root.glob("date=*/*.parquet")
        )
