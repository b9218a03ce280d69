"""Compute the offline feature tables of one day from the event table.

Each table has one row per entity active that day, stamped with the time of that entity's last
event of the day, holding the state *after* that event. A point-in-time join at time t therefore
only sees events at or before t (query at t minus one microsecond to exclude the event at t).

The tables are computed by streaming the event table in record batches of `BATCH_ROWS` rows
(`EventTable.iter_batches`): item counts are summed per batch, and each active user's last
`SEQUENCE_LENGTH` engagements are kept by a bounded merge. Memory is bounded by the batch and by
the day's active entities (plus `max_length` rows per active user), not by the days' sizes.

Outcomes and surfaces are stored as the vocabulary's codes (`codes`: `events.contract.EventCodes`,
default the built-in data's); the item tables have one count column per outcome family and one
group of columns per surface of the code ledger (`EventCodes.item_count_columns`, `.surfaces`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from events.contract import BUILTIN_CODES, TIMESTAMP_DTYPE, EventCodes
from events.table import EventTable

SEQUENCE_LENGTH = 200
# Freshness: each user's items impressed in the last SHOWN_DAYS days (the day itself included),
# at most SHOWN_LENGTH impressions: the service does not serve them again (a vocabulary whose
# items are bought again, `repeats: true`, does).
SHOWN_DAYS = 3
SHOWN_LENGTH = 300
ENTITY_TIMESTAMP = "event_timestamp"
# Rows read per record batch when streaming the event table: memory is bounded by this and by
# the number of active entities (and max_length per active user), not by the days' sizes.
BATCH_ROWS = 1_000_000

_HISTORY_COLUMNS = ["user_id", "item_id", "surface", "outcome", "event_ts"]
HISTORY_COLUMNS = _HISTORY_COLUMNS


def _codes(values: pa.Array | pa.ChunkedArray, vocabulary: tuple[str, ...]) -> np.ndarray:
    return pc.index_in(values, value_set=pa.array(vocabulary)).to_numpy(zero_copy_only=False).astype(np.int64)


def _columns(batch: pa.RecordBatch, codes: EventCodes) -> dict[str, np.ndarray]:
    """A batch of event rows as numpy arrays: ids, outcome/surface codes, ts in microseconds."""
    out = {}
    for name in batch.schema.names:
        col = batch.column(name)
        if name == "outcome":
            out[name] = _codes(col, codes.outcomes)
        elif name == "surface":
            out[name] = _codes(col, codes.surfaces)
        elif name == "event_ts":
            out[name] = col.cast(pa.int64()).to_numpy(zero_copy_only=False)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def _history(table: EventTable, day: date, columns: list[str], codes: EventCodes) -> Iterator[dict[str, np.ndarray]]:
    """Every ingested day <= `day`, streamed in ingestion order, as `_columns` batches."""
    days = [d for d in table.days() if d <= day]
    for batch in table.iter_batches(days, columns, BATCH_ROWS):
        yield _columns(batch, codes)


def _frame_batches(events: pd.DataFrame, codes: EventCodes) -> Iterator[dict[str, np.ndarray]]:
    """An in-memory event frame as one `_columns` batch."""
    cols = [c for c in _HISTORY_COLUMNS if c in events.columns]
    frame = events[cols].copy()
    if "event_ts" in frame:
        frame["event_ts"] = frame["event_ts"].astype(TIMESTAMP_DTYPE)
    yield _columns(pa.RecordBatch.from_pandas(frame, preserve_index=False), codes)


def _active_in(batches: Iterable[pa.RecordBatch], codes: EventCodes) -> tuple[np.ndarray, np.ndarray]:
    """(users with an event other than an impression, items with any event) in `batches`, sorted."""
    users, items = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for batch in batches:
        cols = _columns(batch, codes)
        users = np.union1d(users, np.unique(cols["user_id"][cols["outcome"] != codes.impression_code]))
        items = np.union1d(items, np.unique(cols["item_id"]))
    return users, items


ACTIVE_COLUMNS = ["user_id", "item_id", "outcome"]


def _active_ids(table: EventTable, day: date, codes: EventCodes) -> tuple[np.ndarray, np.ndarray]:
    """(users with an event other than an impression on `day`, items with any event on `day`),
    sorted, streamed."""
    return _active_in(table.iter_batches([day], ACTIVE_COLUMNS, BATCH_ROWS), codes)


def _member_index(ids: np.ndarray, sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of `ids` found in `sorted_ids`, their positions there)."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), bool), np.zeros(0, np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    found = sorted_ids[pos] == ids
    return found, pos[found]


class _LastEngagements:
    """Each active user's last `max_length` engagements, merged batch by batch.

    Rows arrive in ingestion order; they are buffered and, every `BATCH_ROWS` buffered rows,
    merged: stable sort by (user, time), keep each user's last `max_length`. Stable sorting of
    kept-then-new rows equals one stable sort of everything, so ties in time keep ingestion
    order. Rows are held compactly (the user as its position among the active users, int32;
    surface and outcome codes as int8: 22 bytes a row), and a merge builds one column at a
    time. Memory: max_length per active user (at most users x max_length rows, whatever the
    day's size) plus the buffer and one merge's working arrays, all bounded by `BATCH_ROWS`
    and the active users.
    """

    _FIELDS = {"user": np.int32, "item_id": np.int64, "surface": np.int8, "outcome": np.int8, "event_ts": np.int64}
    _SHOWN_FIELDS = {"user": np.int32, "item_id": np.int64, "event_ts": np.int64}

    def __init__(
        self,
        users: np.ndarray,
        max_length: int,
        impression_code: int,
        shown_since_us: int | None = None,
        shown_length: int = SHOWN_LENGTH,
    ):
        self.users, self.max_length, self.impression_code = users, max_length, impression_code
        # impressions at or after `shown_since_us` (None: none kept), the last `shown_length` per user
        self.shown_since_us, self.shown_length = shown_since_us, shown_length
        self.kept = {f: np.zeros(0, t) for f, t in self._FIELDS.items()}
        self.shown = {f: np.zeros(0, t) for f, t in self._SHOWN_FIELDS.items()}
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_shown: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0

    def add(self, cols: dict[str, np.ndarray]) -> None:
        found, pos = _member_index(cols["user_id"], self.users)
        engaged = cols["outcome"][found] != self.impression_code
        if engaged.any():
            rows = np.flatnonzero(found)[engaged]
            self.pending.append(
                {
                    "user": pos[engaged].astype(np.int32),
                    **{f: cols[f][rows].astype(t) for f, t in self._FIELDS.items() if f != "user"},
                }
            )
            self.pending_rows += len(rows)
        if self.shown_since_us is not None:
            shown = ~engaged & (cols["event_ts"][found] >= self.shown_since_us)
            if shown.any():
                rows = np.flatnonzero(found)[shown]
                self.pending_shown.append(
                    {
                        "user": pos[shown].astype(np.int32),
                        "item_id": cols["item_id"][rows],
                        "event_ts": cols["event_ts"][rows],
                    }
                )
                self.pending_rows += len(rows)
        if self.pending_rows >= BATCH_ROWS:
            self._merge()

    def _merge(self) -> None:
        self.pending_rows = 0
        if self.pending:
            self.kept, self.pending = (
                _last_rows([self.kept, *self.pending], self._FIELDS, len(self.users), self.max_length),
                [],
            )
        if self.pending_shown:
            parts = [self.shown, *self.pending_shown]
            self.shown, self.pending_shown = (
                _last_rows(parts, self._SHOWN_FIELDS, len(self.users), self.shown_length),
                [],
            )

    def shown_items(self) -> list[np.ndarray]:
        """Per active user (in `users` order), the distinct items of the kept impressions, the most
        recently shown last (consumes the kept impressions)."""
        self._merge()
        k = self.shown
        self.shown = {f: np.zeros(0, t) for f, t in self._SHOWN_FIELDS.items()}
        out = [np.zeros(0, np.int64) for _ in range(len(self.users))]
        if not len(k["user"]):
            return out
        last = np.lexsort((-k["event_ts"], k["item_id"], k["user"]))  # each (user, item): newest first
        first = np.r_[True, (np.diff(k["user"][last]) != 0) | (np.diff(k["item_id"][last]) != 0)]
        rows = last[first]
        rows = rows[np.lexsort((k["event_ts"][rows], k["user"][rows]))]
        users, starts = np.unique(k["user"][rows], return_index=True)
        for u, part in zip(users, np.split(k["item_id"][rows].astype(np.int64), starts[1:])):
            out[u] = part
        return out

    @classmethod
    def combine(cls, parts: list[_LastEngagements]) -> _LastEngagements:
        """One accumulator of parts fed with consecutive stretches of the rows, given in row
        order: a row a part dropped has `max_length` later rows of its user in that part, so it
        is not among the last `max_length` of all rows either; merging the parts' kept rows in
        order (a stable sort) gives what one accumulator fed with every row gives."""
        first = parts[0]
        out = cls(first.users, first.max_length, first.impression_code, first.shown_since_us, first.shown_length)
        for part in parts:
            part._merge()
            out.pending.append(part.kept)
            out.pending_shown.append(part.shown)
        out._merge()
        return out

    def table(self) -> pd.DataFrame:
        """The user_sequence table (consumes the accumulator: its rows become the table's
        sequences, each an int64 numpy array)."""
        shown = self.shown_items() if self.shown_since_us is not None else None
        k = self.kept
        if len(k["user"]) == 0:
            return _empty_user_sequence()
        positions, starts, counts = np.unique(k["user"], return_index=True, return_counts=True)
        bounds = starts[1:]

        def sequences(field: str) -> np.ndarray:
            """One int64 array per user, views into one array of the column (as a parquet reader
            gives them back): Python lists would cost ~40 bytes an element, ~240 MB more at
            20,000 users x 200 engagements, and their conversion to Arrow as much again."""
            column = np.empty(len(positions), dtype=object)
            for i, part in enumerate(np.split(k.pop(field).astype(np.int64), bounds)):
                column[i] = part  # one by one: equal-length parts would broadcast as a 2-D block
            return column

        last_ts = k["event_ts"][starts + counts - 1]
        user_ids = self.users[positions].astype(np.int64)
        self.kept = {f: np.zeros(0, t) for f, t in self._FIELDS.items()}  # what is left of `k` goes with it
        columns = {
            name: sequences(field)
            for name, field in (
                ("seq_item_ids", "item_id"),
                ("seq_outcomes", "outcome"),
                ("seq_surfaces", "surface"),
                ("seq_timestamps_us", "event_ts"),
            )
        }
        if shown is not None:
            columns["seq_shown_item_ids"] = np.empty(len(positions), dtype=object)
            for i, u in enumerate(positions):
                columns["seq_shown_item_ids"][i] = shown[u]
        return pd.DataFrame(
            {
                "user_id": user_ids,
                **columns,
                "seq_length": counts.astype(np.int64),
                ENTITY_TIMESTAMP: pd.to_datetime(last_ts, unit="us", utc=True).astype(TIMESTAMP_DTYPE),
            }
        )


def _last_rows(
    parts: list[dict[str, np.ndarray]], fields: dict, n_users: int, max_length: int
) -> dict[str, np.ndarray]:
    """The rows of `parts` (kept rows first, then new ones) that are among their user's last
    `max_length` by time; a stable sort, so ties in time keep the parts' order."""
    user = np.concatenate([p["user"] for p in parts])
    order = np.lexsort((np.concatenate([p["event_ts"] for p in parts]), user))  # stable
    user = user[order]
    # keep a row when fewer than max_length rows of its user follow it
    counts = np.bincount(user, minlength=n_users)
    group_end = np.repeat(np.cumsum(counts), counts)  # one past each row's user's last row
    keep = order[group_end - np.arange(len(user)) <= max_length]
    del user, order, group_end
    kept = {}
    for f in fields:  # one column at a time: concatenated, picked, the parts released
        kept[f] = np.concatenate([p[f] for p in parts])[keep]
        for p in parts:
            p[f] = None
    return kept


def shown_since_us(day: date, days: int = SHOWN_DAYS) -> int:
    """The first microsecond of the freshness window that ends with `day` (UTC)."""
    start = pd.Timestamp(day, tz="UTC") - pd.Timedelta(days=days - 1)
    return int(start.value // 1000)


class _ItemCounts:
    """Cumulative per-item outcome counts, per-surface counts, first and last event time, for
    the active items, summed batch by batch (memory: a few numbers per active item)."""

    def __init__(self, items: np.ndarray, codes: EventCodes):
        self.items, self.codes = items, codes
        n = len(items)
        self.outcome = np.zeros((n, len(codes.outcomes)), np.int64)
        self.surface_impressions = np.zeros((n, len(codes.surfaces)), np.int64)
        self.surface_engagements = np.zeros((n, len(codes.surfaces)), np.int64)
        self.first = np.full(n, np.iinfo(np.int64).max)
        self.last = np.full(n, np.iinfo(np.int64).min)
        self.seen = np.zeros(n, bool)

    def add(self, cols: dict[str, np.ndarray]) -> None:
        found, pos = _member_index(cols["item_id"], self.items)
        if not found.any():
            return
        n, n_outcomes, n_surfaces = len(self.items), len(self.codes.outcomes), len(self.codes.surfaces)
        outcome, surface, ts = cols["outcome"][found], cols["surface"][found], cols["event_ts"][found]
        self.outcome += np.bincount(pos * n_outcomes + outcome, minlength=n * n_outcomes).reshape(n, -1)
        per_surface = pos * n_surfaces + surface
        impression = outcome == self.codes.impression_code
        engaged = np.isin(outcome, self.codes.engaged_codes)
        self.surface_impressions += np.bincount(per_surface[impression], minlength=n * n_surfaces).reshape(n, -1)
        self.surface_engagements += np.bincount(per_surface[engaged], minlength=n * n_surfaces).reshape(n, -1)
        np.minimum.at(self.first, pos, ts)
        np.maximum.at(self.last, pos, ts)
        self.seen[pos] = True

    @classmethod
    def combine(cls, parts: list[_ItemCounts]) -> _ItemCounts:
        """One accumulator of parts fed with any split of the rows (sums, min, max: exact)."""
        out = cls(parts[0].items, parts[0].codes)
        for part in parts:
            out.outcome += part.outcome
            out.surface_impressions += part.surface_impressions
            out.surface_engagements += part.surface_engagements
            np.minimum(out.first, part.first, out=out.first)
            np.maximum(out.last, part.last, out=out.last)
            out.seen |= part.seen
        return out

    def _stamp(self) -> pd.Series:
        return pd.Series(pd.to_datetime(self.last[self.seen], unit="us", utc=True)).astype(TIMESTAMP_DTYPE)

    def item_stats(self) -> pd.DataFrame:
        o, seen = self.outcome[self.seen], self.seen
        out = {"item_id": self.items[seen].astype(np.int64)}
        for column, codes in self.codes.item_count_columns().items():
            out[column] = o[:, codes].sum(axis=1) if len(codes) > 1 else o[:, codes[0]]
        out["engagements"] = o[:, self.codes.engaged_codes].sum(axis=1)
        out["first_seen_us"] = self.first[seen]
        out[ENTITY_TIMESTAMP] = self._stamp()
        return pd.DataFrame(out)

    def item_surface_stats(self) -> pd.DataFrame:
        seen = self.seen
        out = {"item_id": self.items[seen].astype(np.int64)}
        for code, surface in enumerate(self.codes.surfaces):
            imp = self.surface_impressions[seen, code]
            eng = self.surface_engagements[seen, code]
            out[f"{surface}_impressions"] = imp
            out[f"{surface}_engagements"] = eng
            out[f"{surface}_engagement_rate"] = np.divide(eng, imp, out=np.zeros(len(imp)), where=imp > 0)
        out[ENTITY_TIMESTAMP] = self._stamp()
        return pd.DataFrame(out)


def feature_tables_of(sequences: _LastEngagements, counts: _ItemCounts) -> dict[str, pd.DataFrame]:
    """The three tables, keyed by Feast feature view name, from the fed accumulators."""
    return {
        "user_sequence": sequences.table(),
        "item_stats": counts.item_stats(),
        "item_surface_stats": counts.item_surface_stats(),
    }


def _feed(batches: Iterable[dict[str, np.ndarray]], *consumers) -> None:
    for cols in batches:
        for consumer in consumers:
            consumer.add(cols)


def user_sequence_table(
    table: EventTable, day: date, max_length: int = SEQUENCE_LENGTH, codes: EventCodes = BUILTIN_CODES
) -> pd.DataFrame:
    """Per user with an engagement on `day`: the last `max_length` engagements up to that day.

    Engagements here are every event but impressions (negatives included: negative feedback is
    signal; the model's input keeps the engaged outcomes only). Ties in time keep ingestion order
    (stable sort). Streams the event table (`BATCH_ROWS`).
    """
    users, _ = _active_ids(table, day, codes)
    sequences = _LastEngagements(users, max_length, codes.impression_code, shown_since_us(day))
    if len(users):
        _feed(_history(table, day, ["user_id", "item_id", "surface", "outcome", "event_ts"], codes), sequences)
    return sequences.table()


def _empty_user_sequence() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype="int64"),
            "seq_item_ids": pd.Series([], dtype=object),
            "seq_outcomes": pd.Series([], dtype=object),
            "seq_surfaces": pd.Series([], dtype=object),
            "seq_timestamps_us": pd.Series([], dtype=object),
            "seq_shown_item_ids": pd.Series([], dtype=object),
            "seq_length": pd.Series([], dtype="int64"),
            ENTITY_TIMESTAMP: pd.Series([], dtype=TIMESTAMP_DTYPE),
        }
    )


def _item_counts(table: EventTable, day: date, history: pd.DataFrame | None, codes: EventCodes) -> _ItemCounts:
    if history is not None:  # the caller's events: every item in them
        counts = _ItemCounts(np.unique(history["item_id"].to_numpy()).astype(np.int64), codes)
        _feed(_frame_batches(history, codes), counts)
        return counts
    _, items = _active_ids(table, day, codes)
    counts = _ItemCounts(items, codes)
    if len(items):
        _feed(_history(table, day, ["item_id", "surface", "outcome", "event_ts"], codes), counts)
    return counts


def item_stats_table(
    table: EventTable, day: date, history: pd.DataFrame | None = None, codes: EventCodes = BUILTIN_CODES
) -> pd.DataFrame:
    """Per item seen on `day`: cumulative counts by outcome family up to that day, engagements,
    and first-seen time. `history`: the items' events up to `day`, if already in memory (else
    streamed)."""
    return _item_counts(table, day, history, codes).item_stats()


def item_surface_stats_table(
    table: EventTable, day: date, history: pd.DataFrame | None = None, codes: EventCodes = BUILTIN_CODES
) -> pd.DataFrame:
    """Per item seen on `day`: cumulative impressions, engagements and their rate per surface
    (impressions 0 when the vocabulary has no impression outcome)."""
    return _item_counts(table, day, history, codes).item_surface_stats()


def day_feature_tables(table: EventTable, day: date, codes: EventCodes = BUILTIN_CODES) -> dict[str, pd.DataFrame]:
    """All three offline tables of `day`, keyed by Feast feature view name, from one streamed
    pass over the event table up to `day` (memory bounded by `BATCH_ROWS` and active entities)."""
    users, items = _active_ids(table, day, codes)
    sequences = _LastEngagements(users, SEQUENCE_LENGTH, codes.impression_code, shown_since_us(day))
    counts = _ItemCounts(items, codes)
    if len(users) or len(items):
        _feed(_history(table, day, _HISTORY_COLUMNS, codes), sequences, counts)
    return feature_tables_of(sequences, counts)
