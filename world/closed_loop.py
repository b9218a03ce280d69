"""The closed loop: what the system serves becomes the simulated users' impressions.

`ClosedLoopWorld` wraps a `SimulatedWorld` (``world.simulator``). A closed-loop day has the
open-loop day's sessions (the same users, surfaces, session topics, queries, lengths, organic
items and random numbers); in each session the first served slots show what a recommender
returned for that session instead of the organic items, and users react to every impression
with the world's engagement model, times position bias on served slots, times fatigue
(`world.fatigue`). Requests are answered in batches of ``batch_minutes``: a request sees only
its user's events before its batch's window. Every rule, its reason and its default are in
docs/simulated-world.md ("Closed loop: the user model"); the knobs are `LoopConfig`'s.

`replay_day` plays one day with a recommender callable; `ClosedLoopDay` holds the day's events
and serving log (`events.serving_log.SERVING_LOG_COLUMNS`, with each slot's propensity).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from events.contract import OUTCOME_CODE, OUTCOMES, SURFACES, TIMESTAMP_DTYPE, conform
from events.serving_log import (
    SERVING_LOG_COLUMNS,  # the serving log's table (events/serving_log.py)
)
from world.fatigue import FatigueHistory, _FatigueState
from world.parameters import _ENGAGEMENT_CODES, _IMPRESSION, _US_PER_DAY, _outcome_codes
from world.sessions import DaySessions, _as_date, _rng
from world.simulator import SimulatedWorld

__all__ = [
    "SERVING_LOG_COLUMNS",
    "ClosedLoopDay",
    "ClosedLoopWorld",
    "FatigueHistory",
    "LoopConfig",
    "Recommender",
    "Served",
    "SessionRequest",
    "replay_day",
]

_EXAMINATION_STREAM = 2  # SeedSequence([seed, 2, ordinal, chunk]): one uniform per impression
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The closed loop's knobs (see the module docstring for each rule and its reason).

    Validated on construction (ValueError with the reason). ``fatigue_scale = inf`` and
    ``engaged_again_factor = 1`` turn fatigue off; ``position_eta = 0`` turns position bias off.
    """

    served_share: float = 0.5  # fraction of a session's impressions taken from the served list
    served_k: int = 50  # items a request asks for
    position_eta: float = 0.5  # examination probability (1 + position) ** -eta
    fatigue_scale: float = 20.0  # engagement x exp(-shown / fatigue_scale)
    fatigue_half_life_days: float = 3.0  # the weight of a past impression or engagement halves every so many days
    engaged_again_factor: float = 0.5  # engagement x this if the user acted on the item recently
    batch_minutes: int = 60  # sessions starting in the same window are served in one call

    def __post_init__(self) -> None:
        for name in ("served_share", "position_eta", "fatigue_scale", "fatigue_half_life_days", "engaged_again_factor"):
            value = getattr(self, name)
            if not _number(value) or math.isnan(value):
                raise ValueError(f"LoopConfig.{name} must be a number, got {value!r}")
        for name in ("served_k", "batch_minutes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"LoopConfig.{name} must be an int, got {value!r}")
        if not 0.0 <= self.served_share <= 1.0:
            raise ValueError(f"LoopConfig.served_share must be in [0, 1], got {self.served_share}")
        if self.served_k < 1:
            raise ValueError(f"LoopConfig.served_k must be >= 1, got {self.served_k}")
        if not 0.0 <= self.position_eta < math.inf:
            raise ValueError(f"LoopConfig.position_eta must be finite and >= 0, got {self.position_eta}")
        if not self.fatigue_scale > 0.0:
            raise ValueError(f"LoopConfig.fatigue_scale must be > 0 (inf: no fatigue), got {self.fatigue_scale}")
        if not self.fatigue_half_life_days > 0.0:
            raise ValueError(
                f"LoopConfig.fatigue_half_life_days must be > 0 (inf: no decay), got {self.fatigue_half_life_days}"
            )
        if not 0.0 <= self.engaged_again_factor <= 1.0:
            raise ValueError(f"LoopConfig.engaged_again_factor must be in [0, 1], got {self.engaged_again_factor}")
        if not 1 <= self.batch_minutes <= 24 * 60:
            raise ValueError(f"LoopConfig.batch_minutes must be in [1, 1440], got {self.batch_minutes}")

    def served_slots(self, length: np.ndarray) -> np.ndarray:
        """Served slots of sessions of `length` impressions:
        ``min(floor(served_share * L + 0.5), served_k)``."""
        length = np.asarray(length, dtype=np.int64)
        return np.minimum(np.floor(self.served_share * length + 0.5).astype(np.int64), int(self.served_k))

    def examination_probability(self, position: np.ndarray) -> np.ndarray:
        """P(a served item at 0-based `position` is looked at): ``(1 + position) ** -eta``."""
        return np.power(1.0 + np.asarray(position, dtype=np.float64), -float(self.position_eta))

    def fatigue_factor(self, shown: np.ndarray, engaged: np.ndarray) -> np.ndarray:
        """The factor on the engagement probabilities of an item `shown` (decayed impressions)
        and `engaged` (decayed engagement days) before:
        ``exp(-shown / fatigue_scale) * engaged_again_factor ** min(engaged, 1)``."""
        shown = np.asarray(shown, dtype=np.float64)
        engaged = np.minimum(np.asarray(engaged, dtype=np.float64), 1.0)
        return np.exp(-shown / float(self.fatigue_scale)) * np.power(float(self.engaged_again_factor), engaged)


@dataclasses.dataclass(frozen=True, eq=False)
class SessionRequest:
    """What the recommender is asked for one session, at the session's start.

    ``recent_events`` is a contract frame of this user's events of the same day with
    ``event_ts`` before the start of the request's batch window (sorted by time; possibly
    empty; shared, do not modify). ``query_id`` is the search query (search sessions only).
    ``k`` is how many items to return (`LoopConfig.served_k`).
    """

    user_id: int
    surface: str
    session_id: int
    ts: dt.datetime  # UTC, the session's first impression
    recent_events: pd.DataFrame
    query_id: int | None
    k: int


@dataclasses.dataclass(frozen=True)
class Served:
    """A recommender's answer to one `SessionRequest`: item ids best first, and who served them.
    ``propensities``: per item, the probability that the policy put it in its slot (an
    exploration slot's ``share / catalogue``, `serving.service.exploration`); None: all 1."""

    items: Sequence[int]
    version: str
    arm: str
    served_by: str
    propensities: Sequence[float] | None = None


Recommender = Callable[[list[SessionRequest]], list[Served]]


@dataclasses.dataclass(frozen=True, eq=False)
class ClosedLoopDay:
    """One closed-loop day: contract events, the serving log, and how many calls made it."""

    events: pd.DataFrame
    serving_log: pd.DataFrame
    requests: int
    batches: int


class _DayLog:
    """The day's rows so far (impressions and engagements, in generation order)."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []
        self.cols: dict[str, np.ndarray] | None = None

    def append(self, part: dict[str, np.ndarray]) -> None:
        self.parts.append(part)
        self.cols = None

    def columns(self) -> dict[str, np.ndarray]:
        if self.cols is None:
            keys = ("user", "item", "surface", "outcome", "ts_us", "session_id", "query")
            if self.parts:
                self.cols = {k: np.concatenate([p[k] for p in self.parts]) for k in keys}
                self.parts = [self.cols]
            else:
                self.cols = {k: np.zeros(0, dtype=np.int8 if k == "outcome" else np.int64) for k in keys}
        return self.cols


def _events_frame(cols: dict[str, np.ndarray], day_start_us: int) -> pd.DataFrame:
    query = cols["query"]
    frame = pd.DataFrame(
        {
            "user_id": cols["user"].astype(np.int64),
            "item_id": cols["item"].astype(np.int64),
            "surface": np.array(SURFACES, dtype=object)[cols["surface"]],
            "outcome": np.array(OUTCOMES, dtype=object)[cols["outcome"]],
            "event_ts": pd.DatetimeIndex((cols["ts_us"] + day_start_us).astype("datetime64[us]")).tz_localize("UTC"),
            "session_id": cols["session_id"].astype(np.int64),
            "query_id": pd.arrays.IntegerArray(np.maximum(query, 0).astype(np.int64), query < 0),
        }
    )
    return conform(frame)


def _ranges(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(first[j], first[j] + length[j])``."""
    offsets = np.cumsum(length) - length
    return np.arange(int(length.sum()), dtype=np.int64) + np.repeat(first - offsets, length)


class ClosedLoopWorld:
    """A `SimulatedWorld` whose sessions show what a recommender serves (module docstring)."""

    def __init__(self, world: SimulatedWorld, loop: LoopConfig | None = None) -> None:
        if not isinstance(world, SimulatedWorld):
            raise ValueError(f"world must be a SimulatedWorld, got {type(world).__name__}")
        loop = LoopConfig() if loop is None else loop
        if not isinstance(loop, LoopConfig):
            raise ValueError(f"loop must be a LoopConfig, got {type(loop).__name__}")
        self.world = world
        self.loop = loop

    # ------------------------------------------------------------------ truth

    def expected_engagement(
        self,
        user_ids: np.ndarray,
        surface: str,
        day: dt.date,
        history: FatigueHistory | None = None,
        session_topics: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """`SimulatedWorld.expected_engagement` times fatigue as of the start of `day` (from
        `history`; today's earlier events are not in it): the probability that an examined
        impression (position 0) of item i to user u gets click / save / hide. `user_ids` must be
        distinct when `history` is given."""
        out = self.world.expected_engagement(user_ids, surface, day, session_topics=session_topics)
        if history is None or len(history) == 0:
            return out
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if np.unique(user_ids).shape[0] != user_ids.shape[0]:
            raise ValueError("user_ids must be distinct when a fatigue history is given")
        n_items = self.world.config.n_items
        state = history.state(day, self.loop.fatigue_half_life_days, n_items)
        row_of = np.full(self.world.config.n_users, -1, dtype=np.int64)
        row_of[user_ids] = np.arange(user_ids.shape[0])
        rows = row_of[state.key // n_items]
        mine = rows >= 0
        factor = self.loop.fatigue_factor(state.shown[mine], state.engaged[mine])
        rows, cols = rows[mine], state.key[mine] % n_items
        for name in out:
            out[name][rows, cols] *= factor
        return out

    # ------------------------------------------------------------------ one day

    def day(self, day: dt.date, recommend: Recommender, history: FatigueHistory | None = None) -> ClosedLoopDay:
        """Simulate `day` with `recommend` serving the served slots (module docstring).

        `recommend(requests)` is called once per batch window that has sessions with served
        slots, with those sessions' requests in start order, and must return one `Served` per
        request. `history` holds the days before `day` (None: no earlier days).
        """
        world, loop, cfg = self.world, self.loop, self.world.config
        day = _as_date(day)
        ds = world.day_sessions(day)  # raises on a day outside the world
        state = (history or FatigueHistory()).state(day, loop.fatigue_half_life_days, cfg.n_items)
        r_exam = self._examination_uniforms(ds)
        n_items = cfg.n_items
        day_start_us = (day.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY

        # Per session: served slots, start time (bounded so that any reaction fits in the day).
        n_served = loop.served_slots(ds.length)
        bound = np.add.reduceat(ds.gap_us + ds.delay_us, ds.first) if ds.n_impressions else np.zeros(0, dtype=np.int64)
        start_us = (ds.start_u * (_US_PER_DAY - bound)).astype(np.int64)
        window_us = loop.batch_minutes * 60_000_000
        window = start_us // window_us
        order = np.lexsort((np.arange(ds.n_sessions), start_us))  # start order, ties by session

        # Per impression, filled batch by batch.
        item = ds.item.copy()
        served = np.zeros(ds.n_impressions, dtype=bool)
        examined = np.ones(ds.n_impressions, dtype=bool)
        engagement = np.zeros(ds.n_impressions, dtype=np.int8)
        imp_ts = np.zeros(ds.n_impressions, dtype=np.int64)
        propensity = np.ones(ds.n_impressions, dtype=np.float64)
        labels = np.zeros((ds.n_sessions, 3), dtype=object)  # version, arm, served_by
        log = _DayLog()
        n_requests = n_batches = 0

        bounds = np.flatnonzero(np.r_[True, window[order][1:] != window[order][:-1], True])
        for b0, b1 in zip(bounds[:-1], bounds[1:]):
            batch = order[b0:b1]
            window_start = int(window[batch[0]]) * window_us
            asking = batch[n_served[batch] > 0]
            if asking.size:
                requests = self._requests(ds, asking, start_us, window_start, log, day_start_us)
                answers = recommend(requests)
                self._check_answers(requests, answers)
                n_requests += len(requests)
                n_batches += 1
                for s, answer in zip(asking.tolist(), answers):
                    labels[s] = (answer.version, answer.arm, answer.served_by)
                    self._place(ds, int(s), int(n_served[s]), answer, item, served, propensity)

            # React: every impression of the batch's sessions.
            idx = _ranges(ds.first[batch], ds.length[batch])
            sess = ds.session[idx]
            today = self._today_state(log, window_start, n_items)
            key = ds.user[sess] * n_items + item[idx]
            shown_before, engaged_before = state.lookup(key)
            shown_today, engaged_today = today.lookup(key)
            factor = loop.fatigue_factor(shown_before + shown_today, engaged_before + engaged_today)
            p = world.impression_probabilities(ds.user[sess], item[idx], ds.session_topic[sess], ds.surface[sess], day)
            code = _outcome_codes(ds.r_engage[idx], p["click"] * factor, p["save"] * factor, p["hide"] * factor)
            looked = np.where(served[idx], r_exam[idx] < loop.examination_probability(ds.position[idx]), True)
            code = np.where(looked, code, 0).astype(np.int8)
            examined[idx] = looked
            engagement[idx] = code

            # Timing: open-loop gaps and delays from the session's start.
            engaged = code > 0
            step = ds.gap_us[idx] + np.where(engaged, ds.delay_us[idx], 0)
            before = np.cumsum(step) - step
            lens = ds.length[batch]
            offset = before - np.repeat(before[np.cumsum(lens) - lens], lens)
            ts = start_us[sess] + offset
            imp_ts[idx] = ts
            log.append(self._rows(ds, idx, item[idx], code, ts))

        events = self._day_events(ds, item, engagement, imp_ts, day_start_us)
        serving_log = self._serving_log(
            ds, item, served, examined, engagement, imp_ts, labels, day_start_us, propensity
        )
        return ClosedLoopDay(events=events, serving_log=serving_log, requests=n_requests, batches=n_batches)

    # ------------------------------------------------------------------ internals

    def _examination_uniforms(self, ds: DaySessions) -> np.ndarray:
        """One uniform per impression from the examination stream of its chunk."""
        out = np.empty(ds.n_impressions)
        chunk_of_imp = ds.chunk[ds.session]
        ordinal = ds.day.toordinal()
        for c in np.unique(chunk_of_imp).tolist():
            mine = chunk_of_imp == c  # a chunk's impressions are contiguous, in order
            out[mine] = _rng(self.world.config.seed, _EXAMINATION_STREAM, ordinal, c).random(int(mine.sum()))
        return out

    def _requests(
        self,
        ds: DaySessions,
        sessions: np.ndarray,
        start_us: np.ndarray,
        window_start: int,
        log: _DayLog,
        day_start_us: int,
    ) -> list[SessionRequest]:
        cols = log.columns()
        users = ds.user[sessions]
        visible = (cols["ts_us"] < window_start) & np.isin(cols["user"], users)
        picked = {k: v[visible] for k, v in cols.items()}
        # by user, then time, then generation order (an impression precedes its engagement)
        order = np.lexsort((np.arange(picked["user"].shape[0]), picked["ts_us"], picked["user"]))
        picked = {k: v[order] for k, v in picked.items()}
        frame = _events_frame(picked, day_start_us)
        lo = np.searchsorted(picked["user"], users, side="left")
        hi = np.searchsorted(picked["user"], users, side="right")
        requests = []
        for j, s in enumerate(sessions.tolist()):
            query = int(ds.query[s])
            ts = pd.Timestamp(int(start_us[s]) + day_start_us, unit="us", tz="UTC").to_pydatetime()
            requests.append(
                SessionRequest(
                    user_id=int(ds.user[s]),
                    surface=SURFACES[int(ds.surface[s])],
                    session_id=int(ds.session_id[s]),
                    ts=ts,
                    recent_events=frame.iloc[int(lo[j]) : int(hi[j])].reset_index(drop=True),
                    query_id=None if query < 0 else query,
                    k=int(self.loop.served_k),
                )
            )
        return requests

    def _check_answers(self, requests: list[SessionRequest], answers: object) -> None:
        if not isinstance(answers, (list, tuple)) or len(answers) != len(requests):
            got = len(answers) if isinstance(answers, (list, tuple)) else type(answers).__name__
            raise ValueError(f"recommend must return one Served per request ({len(requests)}), got {got}")
        n_items = self.world.config.n_items
        for answer in answers:
            if not isinstance(answer, Served):
                raise ValueError(f"recommend must return Served objects, got {type(answer).__name__}")
            for name in ("version", "arm", "served_by"):
                if not isinstance(getattr(answer, name), str):
                    raise ValueError(f"Served.{name} must be a str, got {getattr(answer, name)!r}")
            items = np.asarray(answer.items)
            if items.size and (items.ndim != 1 or items.dtype.kind not in "iu"):
                raise ValueError(f"Served.items must be a list of int item ids, got {answer.items!r:.80}")
            if items.size and (items.min() < 0 or items.max() >= n_items):
                raise ValueError(f"Served.items must lie in [0, {n_items}), got {answer.items!r:.80}")
            if answer.propensities is not None:
                p = np.asarray(answer.propensities, dtype=np.float64)
                if p.shape != (items.size,) or not ((p > 0) & (p <= 1)).all():
                    raise ValueError("Served.propensities must be one probability in (0, 1] per item")

    @staticmethod
    def _place(
        ds: DaySessions,
        s: int,
        k: int,
        answer: Served,
        item: np.ndarray,
        served: np.ndarray,
        propensity: np.ndarray,
    ) -> None:
        """Put the served list into slots 0..k-1 of session `s` (module docstring: which items)."""
        first, length = int(ds.first[s]), int(ds.length[s])
        organic_rest = set(ds.item[first + k : first + length].tolist())
        items = answer.items.tolist() if isinstance(answer.items, np.ndarray) else list(answer.items)
        probs = [1.0] * len(items) if answer.propensities is None else [float(p) for p in answer.propensities]
        chosen: list[int] = []
        chosen_p: list[float] = []
        seen: set[int] = set()
        for it, p in zip(items, probs):
            it = int(it)
            if it in seen or it in organic_rest:
                continue
            seen.add(it)
            chosen.append(it)
            chosen_p.append(p)
            if len(chosen) == k:
                break
        item[first : first + len(chosen)] = chosen
        served[first : first + len(chosen)] = True
        propensity[first : first + len(chosen)] = chosen_p

    @staticmethod
    def _today_state(log: _DayLog, window_start: int, n_items: int) -> _FatigueState:
        cols = log.columns()
        seen = cols["ts_us"] < window_start
        key = cols["user"][seen] * n_items + cols["item"][seen]
        is_impression = cols["outcome"][seen] == _IMPRESSION
        # today's weight is 1; an engagement counts once per item and day, as in the history
        state = _FatigueState.build(key, is_impression.astype(np.float64), (~is_impression).astype(np.float64))
        return _FatigueState(state.key, state.shown, np.minimum(state.engaged, 1.0))

    @staticmethod
    def _rows(
        ds: DaySessions, idx: np.ndarray, item: np.ndarray, code: np.ndarray, ts: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The batch's rows for the day log: its impressions, then its engagements."""
        sess = ds.session[idx]
        engaged = code > 0
        both = np.r_[np.arange(idx.shape[0]), np.flatnonzero(engaged)]
        outcome = np.r_[np.full(idx.shape[0], _IMPRESSION, dtype=np.int8), _ENGAGEMENT_CODES[code[engaged]]]
        return {
            "user": ds.user[sess][both],
            "item": item[both],
            "surface": ds.surface[sess][both],
            "outcome": outcome,
            "ts_us": np.r_[ts, ts[engaged] + ds.delay_us[idx][engaged]],
            "session_id": ds.session_id[sess][both],
            "query": ds.query[sess][both],
        }

    @staticmethod
    def _day_events(
        ds: DaySessions, item: np.ndarray, engagement: np.ndarray, imp_ts: np.ndarray, day_start_us: int
    ) -> pd.DataFrame:
        """The day's contract rows in session order: each impression, then its engagement."""
        engaged = engagement > 0
        rows_per_imp = 1 + engaged.astype(np.int64)
        imp_row = np.cumsum(rows_per_imp) - rows_per_imp
        n_rows = int(rows_per_imp.sum())
        eng_row = imp_row[engaged] + 1
        src = np.empty(n_rows, dtype=np.int64)  # the impression each row belongs to
        src[imp_row] = np.arange(ds.n_impressions)
        src[eng_row] = np.flatnonzero(engaged)
        outcome = np.full(n_rows, _IMPRESSION, dtype=np.int8)
        outcome[eng_row] = _ENGAGEMENT_CODES[engagement[engaged]]
        ts = imp_ts[src]
        ts[eng_row] += ds.delay_us[engaged]
        sess = ds.session[src]
        return _events_frame(
            {
                "user": ds.user[sess],
                "item": item[src],
                "surface": ds.surface[sess],
                "outcome": outcome,
                "ts_us": ts,
                "session_id": ds.session_id[sess],
                "query": ds.query[sess],
            },
            day_start_us,
        )

    @staticmethod
    def _serving_log(
        ds: DaySessions,
        item: np.ndarray,
        served: np.ndarray,
        examined: np.ndarray,
        engagement: np.ndarray,
        imp_ts: np.ndarray,
        labels: np.ndarray,
        day_start_us: int,
        propensity: np.ndarray,
    ) -> pd.DataFrame:
        idx = np.flatnonzero(served)
        sess = ds.session[idx]
        outcome = _ENGAGEMENT_CODES[engagement[idx]]
        lab = labels[sess] if idx.size else np.zeros((0, 3), dtype=object)
        return pd.DataFrame(
            {
                "user_id": ds.user[sess].astype(np.int64),
                "session_id": ds.session_id[sess].astype(np.int64),
                "ts": pd.DatetimeIndex((imp_ts[idx] + day_start_us).astype("datetime64[us]"))
                .tz_localize("UTC")
                .astype(TIMESTAMP_DTYPE),
                "surface": np.array(SURFACES, dtype=object)[ds.surface[sess]],
                "position": ds.position[idx].astype(np.int64),
                "item_id": item[idx].astype(np.int64),
                "version": lab[:, 0].astype(object),
                "arm": lab[:, 1].astype(object),
                "served_by": lab[:, 2].astype(object),
                "examined": examined[idx].astype(bool),
                "outcome": np.array(OUTCOMES, dtype=object)[outcome],
                "propensity": propensity[idx],
            },
            columns=list(SERVING_LOG_COLUMNS),
        )


def replay_day(
    world: ClosedLoopWorld, day: dt.date, serving_log: pd.DataFrame, history: FatigueHistory | None = None
) -> ClosedLoopDay:
    """Day `day` played again with exactly what its serving log says was served: each session
    gets the items of its log rows in position order (the ones placed, so placing them again
    places the same), with the same version, arm and served_by; a session without rows gets an
    empty list. By the world's determinism (module docstring) the events are byte-identical to
    the day as first played, given the same `history` of the days before, so a lost or damaged
    copy of the day's events can be fetched again from the world. `ValueError` when the serving
    log does not come out the same (a log that is not this day's)."""
    by_session = {int(s): g.sort_values("position") for s, g in serving_log.groupby("session_id")}

    def recommend(requests: list[SessionRequest]) -> list[Served]:
        out = []
        for r in requests:
            g = by_session.get(r.session_id)
            if g is None:
                out.append(Served([], "none", "none", "none"))
            else:
                out.append(
                    Served(
                        g["item_id"].astype(int).tolist(),
                        str(g["version"].iloc[0]),
                        str(g["arm"].iloc[0]),
                        str(g["served_by"].iloc[0]),
                        g["propensity"].astype(float).tolist() if "propensity" in g else None,
                    )
                )
        return out

    again = world.day(day, recommend, history)
    keys = ["session_id", "position", "item_id", "outcome"]
    mine = again.serving_log[keys].sort_values(keys[:2]).reset_index(drop=True)
    theirs = serving_log[keys].sort_values(keys[:2]).reset_index(drop=True)
    if len(mine) != len(theirs) or not mine.astype(str).equals(theirs.astype(str)):
        raise ValueError(
            f"the serving log given for {day} does not replay to itself ({len(theirs)} rows, "
            f"replayed {len(mine)}): it is not this day's log"
        )
    return again


if OUTCOME_CODE["impression"] != _IMPRESSION:  # the simulator and the contract agree on the code
    raise ImportError("world.simulator's impression code differs from the event contract's")
