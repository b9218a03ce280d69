"""A day's sessions before anyone reacts (`DaySessions`), and the seeded draws the world and the
closed loop share."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd


def _as_date(day: dt.date) -> dt.date:
    if isinstance(day, pd.Timestamp):
        return day.date()
    if isinstance(day, dt.datetime):
        return day.date()
    if isinstance(day, dt.date):
        return day
    raise ValueError(f"day must be a datetime.date, got {day!r}")


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def _row_cdf(probs: np.ndarray) -> np.ndarray:
    """Flattened per-row CDFs offset by the row index: row r spans (r, r + 1]."""
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    cdf += np.arange(probs.shape[0], dtype=np.float64)[:, None]
    return cdf.ravel()


def _sample_rows(flat_cdf: np.ndarray, rows: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per entry of `rows`, from that row of a `_row_cdf` matrix."""
    u = rng.random(rows.shape[0])
    idx = np.searchsorted(flat_cdf, rows + u, side="right") - rows * width
    return np.clip(idx, 0, width - 1)


@dataclasses.dataclass(frozen=True)
class DaySessions:
    """The sessions of an open-loop day before anyone reacts (`SimulatedWorld.day_sessions`).

    Exactly the sessions and impressions `SimulatedWorld.day` shows (the last session of a chunk
    cut at the row budget keeps the impressions the day has of it), in the day's row order
    (chunk, then session, then position). Per-session arrays have one entry per session,
    per-impression arrays one per impression. The closed loop (`world.closed_loop`) replaces
    some items and re-times the sessions; everything else it takes from here.
    """

    day: dt.date
    # per session
    session_id: np.ndarray  # int64, as in the day's rows
    chunk: np.ndarray  # int64, the chunk that drew the session
    user: np.ndarray  # int64
    surface: np.ndarray  # int64 code into SURFACES
    session_topic: np.ndarray  # int64; not observable in the events (search: the query's topic)
    query: np.ndarray  # int64 query id, -1 where none
    start_u: np.ndarray  # float64 uniform in [0, 1): where in the day the session starts
    first: np.ndarray  # int64 index of the session's first impression
    length: np.ndarray  # int64 impressions the day shows of the session (>= 1)
    # per impression
    session: np.ndarray  # int64 index into the per-session arrays
    position: np.ndarray  # int64 0-based position within the session
    item: np.ndarray  # int64 the organic item the open-loop world shows there
    r_engage: np.ndarray  # float64 uniform the reaction is read from (see `_outcome_codes`)
    gap_us: np.ndarray  # int64 time since the previous impression of the session (us)
    delay_us: np.ndarray  # int64 delay of an engagement after its impression (us)

    @property
    def n_sessions(self) -> int:
        return int(self.session_id.shape[0])

    @property
    def n_impressions(self) -> int:
        return int(self.item.shape[0])
