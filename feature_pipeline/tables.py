"""Compute the offline feature tables of one day from the event table.

Each table has one row per entity active that day, stamped with the time of that entity's last
event of the day, holding the state *after* that event. A point-in-time join at time t therefore
only sees events at or before t (query at t minus one microsecond to exclude the event at t).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from events.contract import OUTCOME_CODE, SURFACE_CODE, SURFACES, TIMESTAMP_DTYPE
from events.table import EventTable

SEQUENCE_LENGTH = 200
ENTITY_TIMESTAMP = "event_timestamp"

_RATING_CODES = [code for name, code in OUTCOME_CODE.items() if name.startswith("rating_")]


def _to_us(ts: pd.Series) -> np.ndarray:
    return ts.astype(TIMESTAMP_DTYPE).astype("int64").to_numpy()


def _active_ids(table: EventTable, day: date, column: str, engaged_only: bool) -> np.ndarray:
    df = table.read_day(day)
    if engaged_only:
        df = df[df["outcome"] != "impression"]
    return np.unique(df[column].to_numpy())


def user_sequence_table(table: EventTable, day: date, max_length: int = SEQUENCE_LENGTH) -> pd.DataFrame:
    """Per user with an engagement on `day`: the last `max_length` engagements up to that day.

    Engagements are every event but impressions (hides included: negative feedback is signal).
    Ties in time keep ingestion order (stable sort).
    """
    users = _active_ids(table, day, "user_id", engaged_only=True)
    columns = ["user_id", "item_id", "surface", "outcome", "event_ts"]
    if len(users) == 0:
        return _empty_user_sequence()
    flt = pc.field("user_id").isin(users) & (pc.field("outcome") != "impression")
    ev = table.read_until(day, filter_expr=flt, columns=columns)
    ev = ev.sort_values(["user_id", "event_ts"], kind="stable")
    # keep each user's last max_length events
    from_end = ev.groupby("user_id", sort=False).cumcount(ascending=False)
    ev = ev[from_end < max_length]
    ev = ev.assign(
        outcome_code=ev["outcome"].map(OUTCOME_CODE).astype("int64"),
        surface_code=ev["surface"].map(SURFACE_CODE).astype("int64"),
        ts_us=_to_us(ev["event_ts"]),
    )
    grouped = ev.groupby("user_id", sort=True)
    out = pd.DataFrame(
        {
            "seq_item_ids": grouped["item_id"].agg(list),
            "seq_outcomes": grouped["outcome_code"].agg(list),
            "seq_surfaces": grouped["surface_code"].agg(list),
            "seq_timestamps_us": grouped["ts_us"].agg(list),
            "seq_length": grouped.size().astype("int64"),
            ENTITY_TIMESTAMP: grouped["event_ts"].max(),
        }
    ).reset_index()
    return out


def _empty_user_sequence() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype="int64"),
            "seq_item_ids": pd.Series([], dtype=object),
            "seq_outcomes": pd.Series([], dtype=object),
            "seq_surfaces": pd.Series([], dtype=object),
            "seq_timestamps_us": pd.Series([], dtype=object),
            "seq_length": pd.Series([], dtype="int64"),
            ENTITY_TIMESTAMP: pd.Series([], dtype=TIMESTAMP_DTYPE),
        }
    )


def _item_history(table: EventTable, day: date) -> pd.DataFrame:
    items = _active_ids(table, day, "item_id", engaged_only=False)
    if len(items) == 0:
        return pd.DataFrame(columns=["item_id", "surface", "outcome", "event_ts"])
    return table.read_until(
        day, filter_expr=pc.field("item_id").isin(items), columns=["item_id", "surface", "outcome", "event_ts"]
    )


def item_stats_table(table: EventTable, day: date, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per item seen on `day`: cumulative counts by outcome up to that day, and first-seen time."""
    ev = _item_history(table, day) if history is None else history
    if ev.empty:
        cols = ["item_id", "impressions", "clicks", "saves", "hides", "ratings", "engagements", "first_seen_us"]
        return pd.DataFrame({c: pd.Series([], dtype="int64") for c in cols}).assign(
            **{ENTITY_TIMESTAMP: pd.Series([], dtype=TIMESTAMP_DTYPE)}
        )
    code = ev["outcome"].map(OUTCOME_CODE).to_numpy()
    flags = pd.DataFrame(
        {
            "item_id": ev["item_id"].to_numpy(),
            "impressions": code == OUTCOME_CODE["impression"],
            "clicks": code == OUTCOME_CODE["click"],
            "saves": code == OUTCOME_CODE["save"],
            "hides": code == OUTCOME_CODE["hide"],
            "ratings": np.isin(code, _RATING_CODES),
        }
    )
    flags["engagements"] = flags["clicks"] | flags["saves"] | flags["ratings"]
    counts = flags.groupby("item_id").sum().astype("int64")
    grouped = ev.groupby("item_id")["event_ts"]
    counts["first_seen_us"] = _to_us(grouped.min())
    counts[ENTITY_TIMESTAMP] = grouped.max().astype(TIMESTAMP_DTYPE)
    return counts.reset_index()


def item_surface_stats_table(table: EventTable, day: date, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per item seen on `day`: cumulative impressions, engagements and their rate per surface."""
    ev = _item_history(table, day) if history is None else history
    out = pd.DataFrame({"item_id": np.unique(ev["item_id"].to_numpy()).astype("int64")})
    if ev.empty:
        for surface in SURFACES:
            out[f"{surface}_impressions"] = pd.Series([], dtype="int64")
            out[f"{surface}_engagements"] = pd.Series([], dtype="int64")
            out[f"{surface}_engagement_rate"] = pd.Series([], dtype="float64")
        out[ENTITY_TIMESTAMP] = pd.Series([], dtype=TIMESTAMP_DTYPE)
        return out
    code = ev["outcome"].map(OUTCOME_CODE).to_numpy()
    engaged = (code != OUTCOME_CODE["impression"]) & (code != OUTCOME_CODE["hide"])
    frame = pd.DataFrame(
        {"item_id": ev["item_id"].to_numpy(), "surface": ev["surface"].to_numpy(),
         "impressions": code == OUTCOME_CODE["impression"], "engagements": engaged}
    )
    per = frame.groupby(["item_id", "surface"])[["impressions", "engagements"]].sum().unstack("surface", fill_value=0)
    out = out.set_index("item_id")
    for surface in SURFACES:
        imp = per["impressions"][surface] if surface in per["impressions"] else 0
        eng = per["engagements"][surface] if surface in per["engagements"] else 0
        out[f"{surface}_impressions"] = pd.Series(imp, index=per.index).reindex(out.index, fill_value=0).astype("int64")
        out[f"{surface}_engagements"] = pd.Series(eng, index=per.index).reindex(out.index, fill_value=0).astype("int64")
        denom = out[f"{surface}_impressions"].where(out[f"{surface}_impressions"] > 0)
        out[f"{surface}_engagement_rate"] = (out[f"{surface}_engagements"] / denom).fillna(0.0).astype("float64")
    out[ENTITY_TIMESTAMP] = ev.groupby("item_id")["event_ts"].max().astype(TIMESTAMP_DTYPE)
    return out.reset_index()


def day_feature_tables(table: EventTable, day: date) -> dict[str, pd.DataFrame]:
    """All three offline tables of `day`, keyed by Feast feature view name."""
    history = _item_history(table, day)
    return {
        "user_sequence": user_sequence_table(table, day),
        "item_stats": item_stats_table(table, day, history),
        "item_surface_stats": item_surface_stats_table(table, day, history),
    }

