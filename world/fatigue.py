"""Fatigue: what each user was shown and acted on lately, by item, with its weight fading by
age (`FatigueHistory`), and the per-(user, item) counts a day's reactions are scaled by
(`_FatigueState`); docs/simulated-world.md gives the rule and its reason."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from world.sessions import _as_date

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


class FatigueHistory:
    """What fatigue needs about earlier days: per (day, user, item) the impressions and whether
    the user clicked, saved or hid it (any outcome other than ``impression`` counts).

    Build it from an event table with `from_events` and extend it one day at a time with
    `update`; both aggregate the same way, so a history rebuilt from the lake equals the one a
    runner kept up to date. `update` mutates in place and only accepts days after `through`.
    """

    def __init__(self) -> None:
        self.day = np.zeros(0, dtype=np.int64)  # ordinal
        self.user = np.zeros(0, dtype=np.int64)
        self.item = np.zeros(0, dtype=np.int64)
        self.shown = np.zeros(0, dtype=np.int64)
        self.engaged = np.zeros(0, dtype=bool)
        self._state_cache: tuple[tuple, _FatigueState] | None = None

    @classmethod
    def from_events(cls, events: pd.DataFrame) -> FatigueHistory:
        """A history of every day in `events` (a contract frame; any order)."""
        history = cls()
        history.update(events)
        return history

    @property
    def through(self) -> dt.date | None:
        """The last day recorded (None when empty)."""
        return dt.date.fromordinal(int(self.day[-1])) if self.day.size else None

    def __len__(self) -> int:
        return int(self.day.shape[0])

    def update(self, events: pd.DataFrame) -> None:
        """Add `events` (contract frame of one or more days, all after `through`) in place."""
        missing = {"user_id", "item_id", "outcome", "event_ts"} - set(events.columns)
        if missing:
            raise ValueError(f"FatigueHistory.update: events lack columns {sorted(missing)}")
        if len(events) == 0:
            return
        ts = pd.to_datetime(events["event_ts"], utc=True)
        day = ts.dt.tz_localize(None).to_numpy().astype("datetime64[D]").astype(np.int64) + _EPOCH_ORDINAL
        if self.day.size and day.min() <= self.day[-1]:
            raise ValueError(
                f"FatigueHistory.update: events of {dt.date.fromordinal(int(day.min()))} are not after "
                f"the last recorded day {self.through}"
            )
        user = events["user_id"].to_numpy(dtype=np.int64)
        item = events["item_id"].to_numpy(dtype=np.int64)
        outcome = events["outcome"].to_numpy()
        impression = outcome == "impression"
        order = np.lexsort((item, user, day))
        d, u, i = day[order], user[order], item[order]
        new = np.r_[True, (d[1:] != d[:-1]) | (u[1:] != u[:-1]) | (i[1:] != i[:-1])]
        starts = np.flatnonzero(new)
        shown = np.add.reduceat(impression[order].astype(np.int64), starts)
        engaged = np.maximum.reduceat(~impression[order], starts)
        self.day = np.concatenate([self.day, d[starts]])
        self.user = np.concatenate([self.user, u[starts]])
        self.item = np.concatenate([self.item, i[starts]])
        self.shown = np.concatenate([self.shown, shown])
        self.engaged = np.concatenate([self.engaged, engaged])

    def before(self, day: dt.date) -> FatigueHistory:
        """A copy holding only the days before `day` (to re-run `day` from a longer history)."""
        keep = self.day < _as_date(day).toordinal()
        out = FatigueHistory()
        out.day, out.user, out.item = self.day[keep], self.user[keep], self.item[keep]
        out.shown, out.engaged = self.shown[keep], self.engaged[keep]
        return out

    def equals(self, other: FatigueHistory) -> bool:
        """Whether two histories hold the same records."""
        return all(
            np.array_equal(getattr(self, k), getattr(other, k)) for k in ("day", "user", "item", "shown", "engaged")
        )

    def state(self, day: dt.date, half_life_days: float, n_items: int) -> _FatigueState:
        """Per (user, item): impressions and engagement days, each recorded day ``d`` weighted
        ``0.5 ** ((day - d) / half_life_days)``, as of the start of `day` (recorded days must be
        before it)."""
        ordinal = _as_date(day).toordinal()
        cache_key = (ordinal, float(half_life_days), int(n_items), len(self))  # update() only appends
        if self._state_cache is not None and self._state_cache[0] == cache_key:
            return self._state_cache[1]
        if self.day.size and self.day[-1] >= ordinal:
            raise ValueError(
                f"the fatigue history reaches {self.through}, not before {day}: "
                "pass history.before(day) to re-run a recorded day"
            )
        if self.item.size and (self.item.max() >= n_items or self.item.min() < 0):
            raise ValueError(f"the fatigue history has item ids outside [0, {n_items}): another world's history?")
        weight = np.power(0.5, (ordinal - self.day) / float(half_life_days))
        state = _FatigueState.build(self.user * n_items + self.item, self.shown * weight, self.engaged * weight)
        self._state_cache = (cache_key, state)
        return state


@dataclasses.dataclass(frozen=True)
class _FatigueState:
    """Sorted unique keys ``user * n_items + item`` with decayed impression and engagement-day counts."""

    key: np.ndarray
    shown: np.ndarray
    engaged: np.ndarray

    @classmethod
    def build(cls, key: np.ndarray, shown: np.ndarray, engaged: np.ndarray) -> _FatigueState:
        if key.size == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64))
        uniq, inverse = np.unique(key, return_inverse=True)
        total = np.bincount(inverse, weights=shown, minlength=uniq.shape[0])
        engaged_total = np.bincount(inverse, weights=engaged, minlength=uniq.shape[0])
        return cls(uniq, total, engaged_total)

    def lookup(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.key.size == 0:
            return np.zeros(key.shape[0]), np.zeros(key.shape[0])
        pos = np.minimum(np.searchsorted(self.key, key), self.key.shape[0] - 1)
        hit = self.key[pos] == key
        return np.where(hit, self.shown[pos], 0.0), np.where(hit, self.engaged[pos], 0.0)
