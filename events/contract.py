"""The event contract: one row per user action or impression.

Every stage imports its column names, vocabularies and the pandera schema from here; no other
module re-declares them.

| column     | type                      | meaning                                               |
|------------|---------------------------|-------------------------------------------------------|
| user_id    | int64 >= 0                | the acting user                                       |
| item_id    | int64 >= 0                | the item acted on or impressed                        |
| surface    | str in SURFACES           | where it happened                                     |
| outcome    | str in OUTCOMES           | impression, click, save, hide, or a dataset level     |
| event_ts   | timestamp[us, UTC]        | when; never naive, never in the future                |
| session_id | int64 >= 0                | session the event belongs to                          |
| query_id   | Int64 (nullable) >= 0     | search query, for search-surface events               |
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

SURFACES: tuple[str, ...] = ("homefeed", "search", "related")

# Outcome vocabulary. Codes are stable: they are stored in feature tables and model inputs.
# `rating_1`..`rating_5` are MovieLens' dataset-specific levels (every rating is an engagement).
OUTCOMES: tuple[str, ...] = (
    "impression",
    "click",
    "save",
    "hide",
    "rating_1",
    "rating_2",
    "rating_3",
    "rating_4",
    "rating_5",
)
OUTCOME_CODE: dict[str, int] = {name: code for code, name in enumerate(OUTCOMES)}
SURFACE_CODE: dict[str, int] = {name: code for code, name in enumerate(SURFACES)}

# An impression alone is not an engagement; hide is an explicit negative engagement.
ENGAGED_OUTCOMES: frozenset[str] = frozenset(OUTCOMES) - {"impression", "hide"}

COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "surface",
    "outcome",
    "event_ts",
    "session_id",
    "query_id",
)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c != "query_id")
# Two rows with the same key are the same event delivered twice.
EVENT_KEY: tuple[str, ...] = ("user_id", "item_id", "surface", "outcome", "event_ts", "session_id")

TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
MAX_ID = 2**53  # ids above this lose precision in JSON and float pipelines: treated as corrupt
FUTURE_TOLERANCE = pd.Timedelta(minutes=5)


def _not_in_future(ts: pd.Series) -> pd.Series:
    return ts <= pd.Timestamp.now(tz="UTC") + FUTURE_TOLERANCE


EVENT_SCHEMA = pa.DataFrameSchema(
    name="events",
    columns={
        "user_id": pa.Column("int64", pa.Check.in_range(0, MAX_ID), nullable=False),
        "item_id": pa.Column("int64", pa.Check.in_range(0, MAX_ID), nullable=False),
        "surface": pa.Column(str, pa.Check.isin(SURFACES), nullable=False),
        "outcome": pa.Column(str, pa.Check.isin(OUTCOMES), nullable=False),
        "event_ts": pa.Column(
            TIMESTAMP_DTYPE,
            [
                pa.Check.ge(pd.Timestamp("1970-01-01", tz="UTC"), name="not_before_1970"),
                pa.Check(_not_in_future, name="not_in_future", element_wise=False),
            ],
            nullable=False,
        ),
        "session_id": pa.Column("int64", pa.Check.in_range(0, MAX_ID), nullable=False),
        "query_id": pa.Column("Int64", pa.Check.in_range(0, MAX_ID), nullable=True, required=False),
    },
    strict=True,
    ordered=False,
)


def empty_events() -> pd.DataFrame:
    """A zero-row frame with the contract's columns and dtypes."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype="int64"),
            "item_id": pd.Series([], dtype="int64"),
            "surface": pd.Series([], dtype=object),
            "outcome": pd.Series([], dtype=object),
            "event_ts": pd.Series([], dtype=TIMESTAMP_DTYPE),
            "session_id": pd.Series([], dtype="int64"),
            "query_id": pd.Series([], dtype="Int64"),
        }
    )


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return `df` with exactly the contract's columns, in order, with the contract's dtypes.

    For frames a source produced itself (already valid); raw input goes through ingestion.
    """
    out = df.copy()
    if "query_id" not in out.columns:
        out["query_id"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out = out[list(COLUMNS)]
    for col in ("user_id", "item_id", "session_id"):
        out[col] = out[col].astype("int64")
    out["query_id"] = out["query_id"].astype("Int64")
    out["surface"] = out["surface"].astype(object)
    out["outcome"] = out["outcome"].astype(object)
    out["event_ts"] = pd.to_datetime(out["event_ts"], utc=True).astype(TIMESTAMP_DTYPE)
    return out
