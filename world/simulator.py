"""A seeded multi-surface world that produces event tables in the contract (`events.contract`).

The world gives PinRec's ideas something to find:

* users have latent long-term topic interests, and *what they save* follows a different topic
  distribution than *what they click* (outcome-specific interests);
* every session draws a session topic that is partly off the user's long-term interests, and
  clicks lean towards it while saves follow the long-term save interests, so short-term
  (same-session) and long-term targets differ: the time offset carries signal;
* search sessions follow a query (``query_id`` set, most items shown from the query's topic),
  related sessions follow a seed item's topic, the homefeed mixes session topic, long-term
  interests and popular items;
* the three surfaces turn impressions into click/save/hide at different rates, and most
  impressions are not engaged;
* drift can be injected from a given day: ``outcome_mix`` (saves rarer, hides more common) or
  ``interest_shift`` (users' interests move to other topics).

Rows. Every impression is a row with outcome ``impression``; an impression that is engaged is
followed by one more row (``click``, ``save`` or ``hide``) for the same user, item, surface and
session, 1 to 60 seconds later. Each impression has at most one engagement.

Count rule. A day has exactly ``events_per_day`` rows. They are produced in
``ceil(events_per_day / chunk_size)`` chunks; chunk ``c`` has exactly
``min(chunk_size, events_per_day - c * chunk_size)`` rows. A chunk generates whole sessions and
cuts the last one at the chunk's row budget (the cut can fall between an impression and its
engagement: that impression then simply has no engagement row). Sessions never span chunks.
The chunking is part of the world: a different ``chunk_size`` gives a different (equally valid)
day, so keep it fixed for a world whose days must be reproducible.

Determinism. The world's parameters come from ``SeedSequence([seed, 0])``; chunk ``c`` of day
``d`` from ``SeedSequence([seed, 1, d.toordinal(), c])``. The same config therefore gives
byte-identical frames for a day whatever other days were generated, and in whatever order.

Ids. ``user_id`` in ``[0, n_users)``, ``item_id`` in ``[0, n_items)``, ``query_id`` in
``[0, n_topics * QUERIES_PER_TOPIC)`` (search rows only, ``<NA>`` elsewhere).
``session_id = day.toordinal() * 2**32 + chunk_index * chunk_size + session_index_in_chunk``,
unique across days and chunks (``day.toordinal()`` is ``session_id >> 32``).
Timestamps are UTC with microsecond resolution and lie inside the day.

Memory and speed: everything is vectorised numpy per chunk; memory is bounded by
``chunk_size``, not by ``events_per_day``.

Truth and the closed loop. `expected_engagement` gives the true per-(user, item) probabilities
of click / save / hide on a surface and day (the session topic marginalised, drift applied);
`day_sessions` exposes a day's sessions and random numbers before anyone reacts, which
`world.closed_loop` uses to show served lists in those sessions. docs/simulated-world.md
describes both modes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from events.contract import OUTCOMES, SURFACES, conform

__all__ = [
    "DRIFT_KINDS",
    "QUERIES_PER_TOPIC",
    "DaySessions",
    "SimulatedWorld",
    "SimulatorConfig",
]

SIMULATOR_VERSION = 1
DRIFT_KINDS: tuple[str, ...] = ("outcome_mix", "interest_shift")
QUERIES_PER_TOPIC = 50

_SESSION_ID_SHIFT = 32  # session_id = day ordinal << 32 | index within the day
_US_PER_DAY = 86_400_000_000
_MAX_SESSION_IMPRESSIONS = 200
_MAX_GAP_US = 120_000_000  # 2 min between impressions at most
_MEAN_ENGAGEMENT_DELAY_US = 5_000_000
_MIN_ENGAGEMENT_DELAY_US = 1_000_000
_MAX_ENGAGEMENT_DELAY_US = 60_000_000

# The engagement model (see `_engagement_probabilities`). Stored in `parameters()`.
_ENGAGEMENT_MODEL: dict[str, float] = {
    # fraction of a session topic that is drawn uniformly, off the user's long-term interests
    "session_topic_off_interest": 0.35,
    # clicks lean on the session topic (short term), saves on long-term save interests
    "click_session_weight": 0.5,
    "save_session_weight": 0.0,
    # affinity of an item in the session topic (long-term affinities average 1 over topics)
    "session_topic_affinity": 2.0,
    # Zipf exponent of item popularity and of user activity
    "item_zipf_exponent": 1.0,
    "user_activity_zipf_exponent": 0.6,
    # Dirichlet concentration of users' click and save topic preferences
    "preference_concentration": 0.3,
    # weight of the click preferences in a save preference (the rest is independent)
    "save_click_overlap": 0.1,
}

# Per-surface behaviour. Rates are base probabilities that an impression becomes that outcome,
# scaled by the user's affinity for the item's topic (see `_engagement_probabilities`).
_SURFACE_BEHAVIOUR: dict[str, dict[str, float]] = {
    "homefeed": {
        "session_share": 0.60,
        "mean_impressions": 24.0,
        "mean_gap_s": 6.0,
        "click_rate": 0.05,
        "save_rate": 0.025,
        "hide_rate": 0.02,
        # where shown items come from: the session topic, the user's long-term interests, popular
        "from_session_topic": 0.45,
        "from_long_term": 0.35,
        "from_popular": 0.20,
    },
    "search": {
        "session_share": 0.25,
        "mean_impressions": 10.0,
        "mean_gap_s": 4.0,
        "click_rate": 0.14,
        "save_rate": 0.03,
        "hide_rate": 0.005,
        "from_session_topic": 0.85,
        "from_long_term": 0.05,
        "from_popular": 0.10,
    },
    "related": {
        "session_share": 0.15,
        "mean_impressions": 14.0,
        "mean_gap_s": 5.0,
        "click_rate": 0.08,
        "save_rate": 0.045,
        "hide_rate": 0.01,
        "from_session_topic": 0.70,
        "from_long_term": 0.15,
        "from_popular": 0.15,
    },
}
if tuple(_SURFACE_BEHAVIOUR) != SURFACES:
    raise ValueError(f"the simulator's surfaces {tuple(_SURFACE_BEHAVIOUR)} differ from the contract's {SURFACES}")

# outcome_mix drift at strength s: save rate x (1 - 0.8 s), hide rate x (1 + 2 s), clicks kept.
_DRIFT_SAVE_FACTOR = 0.8
_DRIFT_HIDE_FACTOR = 2.0

_IMPRESSION = OUTCOMES.index("impression")
_ENGAGEMENTS: tuple[str, ...] = ("click", "save", "hide")
# engagement index (0: none, 1: click, 2: save, 3: hide) -> outcome code of its row
_ENGAGEMENT_CODES = np.array([_IMPRESSION] + [OUTCOMES.index(o) for o in _ENGAGEMENTS], dtype=np.int8)


def _outcome_codes(r: np.ndarray, p_click: np.ndarray, p_save: np.ndarray, p_hide: np.ndarray) -> np.ndarray:
    """At most one engagement per impression from its uniform `r`: 0 none, 1 click, 2 save, 3 hide."""
    c1 = p_click
    c2 = c1 + p_save
    c3 = c2 + p_hide
    return np.where(r < c1, 1, np.where(r < c2, 2, np.where(r < c3, 3, 0))).astype(np.int8)


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of a simulated world. Validated on construction (ValueError with the reason)."""

    seed: int = 0
    n_users: int = 2000
    n_items: int = 5000
    n_topics: int = 20
    events_per_day: int = 50_000
    start_date: dt.date = dt.date(2026, 1, 1)
    n_days: int = 30
    chunk_size: int = 1_000_000
    drift_day: dt.date | None = None
    drift_kind: Literal["outcome_mix", "interest_shift"] = "outcome_mix"
    drift_strength: float = 0.5

    def __post_init__(self) -> None:
        for name in ("seed", "n_users", "n_items", "n_topics", "events_per_day", "n_days", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SimulatorConfig.{name} must be an int, got {value!r}")
        if self.seed < 0:
            raise ValueError(f"SimulatorConfig.seed must be >= 0, got {self.seed}")
        if self.n_users < 1:
            raise ValueError(f"SimulatorConfig.n_users must be >= 1, got {self.n_users}")
        if self.n_topics < 2:
            raise ValueError(f"SimulatorConfig.n_topics must be >= 2, got {self.n_topics}")
        if self.n_items < self.n_topics:
            raise ValueError(
                f"SimulatorConfig.n_items ({self.n_items}) must be >= n_topics ({self.n_topics}) "
                "so that every topic has an item"
            )
        if self.events_per_day < 1:
            raise ValueError(f"SimulatorConfig.events_per_day must be >= 1, got {self.events_per_day}")
        if self.n_days < 1:
            raise ValueError(f"SimulatorConfig.n_days must be >= 1, got {self.n_days}")
        if self.chunk_size < 1:
            raise ValueError(f"SimulatorConfig.chunk_size must be >= 1, got {self.chunk_size}")
        n_chunks = -(-self.events_per_day // self.chunk_size)
        if n_chunks * self.chunk_size > 2**_SESSION_ID_SHIFT:
            raise ValueError(
                "SimulatorConfig: ceil(events_per_day / chunk_size) * chunk_size must be <= 2**32 "
                f"(session ids reserve 32 bits per day), got events_per_day={self.events_per_day}, "
                f"chunk_size={self.chunk_size}"
            )
        if not isinstance(self.start_date, dt.date) or isinstance(self.start_date, dt.datetime):
            raise ValueError(f"SimulatorConfig.start_date must be a datetime.date, got {self.start_date!r}")
        if self.drift_day is not None and (
            not isinstance(self.drift_day, dt.date) or isinstance(self.drift_day, dt.datetime)
        ):
            raise ValueError(f"SimulatorConfig.drift_day must be a datetime.date or None, got {self.drift_day!r}")
        if self.drift_kind not in DRIFT_KINDS:
            raise ValueError(f"SimulatorConfig.drift_kind must be one of {DRIFT_KINDS}, got {self.drift_kind!r}")
        strength = self.drift_strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
            raise ValueError(f"SimulatorConfig.drift_strength must be a finite number, got {strength!r}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"SimulatorConfig.drift_strength must be in [0, 1], got {strength}")
        last_ordinal = self.start_date.toordinal() + self.n_days - 1
        if (last_ordinal + 1) * 2**_SESSION_ID_SHIFT > 2**53:
            raise ValueError("SimulatorConfig: the last day is too far in the future for 53-bit session ids")

    @property
    def end_date(self) -> dt.date:
        """The last simulated day (inclusive)."""
        return self.start_date + dt.timedelta(days=self.n_days - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (dates as ISO strings)."""
        out = dataclasses.asdict(self)
        out["seed"] = int(self.seed)
        out["start_date"] = self.start_date.isoformat()
        out["drift_day"] = None if self.drift_day is None else self.drift_day.isoformat()
        out["drift_strength"] = float(self.drift_strength)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatorConfig:
        kwargs = dict(data)
        if isinstance(kwargs.get("start_date"), str):
            kwargs["start_date"] = dt.date.fromisoformat(kwargs["start_date"])
        if isinstance(kwargs.get("drift_day"), str):
            kwargs["drift_day"] = dt.date.fromisoformat(kwargs["drift_day"])
        return cls(**kwargs)


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


class SimulatedWorld:
    """A deterministic simulated world; see the module docstring for the model and the rules."""

    def __init__(self, config: SimulatorConfig) -> None:
        if not isinstance(config, SimulatorConfig):
            raise ValueError(f"config must be a SimulatorConfig, got {type(config).__name__}")
        self.config = config
        cfg = config
        T = cfg.n_topics
        m = _ENGAGEMENT_MODEL
        rng = _rng(cfg.seed, 0)

        # Items: every topic has items; popularity Zipf over a random rank order.
        self.item_topic = rng.permutation(np.arange(cfg.n_items, dtype=np.int64) % T)
        ranks = rng.permutation(cfg.n_items)
        pop = 1.0 / np.power(ranks + 1.0, m["item_zipf_exponent"])
        self.item_popularity = pop / pop.sum()

        # Users: activity (Zipf-like), click and save topic preferences.
        ranks = rng.permutation(cfg.n_users)
        act = 1.0 / np.power(ranks + 1.0, m["user_activity_zipf_exponent"])
        self.user_activity = act / act.sum()
        alpha = np.full(T, m["preference_concentration"])
        self.click_pref = rng.dirichlet(alpha, size=cfg.n_users)
        independent = rng.dirichlet(alpha, size=cfg.n_users)
        w = m["save_click_overlap"]
        self.save_pref = w * self.click_pref + (1.0 - w) * independent

        # Queries: QUERIES_PER_TOPIC per topic under a random id order.
        n_queries = T * QUERIES_PER_TOPIC
        perm = rng.permutation(n_queries)
        self.query_topic = np.empty(n_queries, dtype=np.int64)
        self.query_topic[perm] = np.arange(n_queries) // QUERIES_PER_TOPIC
        self._queries_by_topic = perm.reshape(T, QUERIES_PER_TOPIC)

        # interest_shift drift: interests move along a random cycle over all topics
        # (topic_shift[t] != t for every t).
        cycle = rng.permutation(T)
        self.topic_shift = np.empty(T, dtype=np.int64)
        self.topic_shift[cycle] = np.roll(cycle, -1)

        # Sampling tables. Items sorted by topic; key = topic + within-topic popularity CDF.
        order = np.lexsort((np.arange(cfg.n_items), self.item_topic))
        self._items_by_topic = order
        sorted_topic = self.item_topic[order]
        sorted_pop = self.item_popularity[order]
        csum = np.cumsum(sorted_pop)
        topic_total = np.bincount(sorted_topic, weights=sorted_pop, minlength=T)
        topic_start = np.concatenate([[0.0], np.cumsum(topic_total)[:-1]])
        within = (csum - topic_start[sorted_topic]) / topic_total[sorted_topic]
        within[np.r_[sorted_topic[1:] != sorted_topic[:-1], True]] = 1.0  # exact segment ends
        self._topic_item_key = sorted_topic + within
        pop_cdf = np.cumsum(self.item_popularity)
        self._pop_cdf = pop_cdf / pop_cdf[-1]
        act_cdf = np.cumsum(self.user_activity)
        self._activity_cdf = act_cdf / act_cdf[-1]
        self._tables: dict[bool, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ public API

    def days(self) -> list[dt.date]:
        """The simulated days, in order."""
        return [self.config.start_date + dt.timedelta(days=i) for i in range(self.config.n_days)]

    def is_drifted(self, day: dt.date) -> bool:
        """Whether drift applies on `day`."""
        day = _as_date(day)
        return self.config.drift_day is not None and day >= self.config.drift_day

    def surface_rates(self, day: dt.date | None = None) -> dict[str, dict[str, float]]:
        """Base impression -> click/save/hide rates per surface in force on `day`."""
        drifted = day is not None and self.is_drifted(day)
        return {s: self._rates(s, drifted and self.config.drift_kind == "outcome_mix") for s in SURFACES}

    def preferences(self, day: dt.date | None = None) -> dict[str, np.ndarray]:
        """Users' click and save topic preferences (n_users x n_topics) in force on `day`."""
        drifted = day is not None and self.is_drifted(day) and self.config.drift_kind == "interest_shift"
        return {"click": self._pref(self.click_pref, drifted), "save": self._pref(self.save_pref, drifted)}

    def iter_day(self, day: dt.date) -> Iterator[pd.DataFrame]:
        """Yield the day's events as contract frames of at most `chunk_size` rows each."""
        day = self._check_day(day)  # raises here, not at the first next()
        return self._iter_chunks(day)

    def _iter_chunks(self, day: dt.date) -> Iterator[pd.DataFrame]:
        cfg = self.config
        n_chunks = -(-cfg.events_per_day // cfg.chunk_size)
        for c in range(n_chunks):
            budget = min(cfg.chunk_size, cfg.events_per_day - c * cfg.chunk_size)
            yield self._chunk(day, c, budget)

    def day(self, day: dt.date) -> pd.DataFrame:
        """All of the day's events in one contract frame (the chunks of `iter_day`, concatenated)."""
        chunks = list(self.iter_day(day))
        if len(chunks) == 1:
            return chunks[0]
        return pd.concat(chunks, ignore_index=True)

    def day_sessions(self, day: dt.date) -> DaySessions:
        """The day's sessions and organic impressions, with the random numbers their reactions
        and timing use, before anyone reacts (see `DaySessions`). Same draws as `day(day)`."""
        day = self._check_day(day)
        cfg = self.config
        ordinal = day.toordinal()
        n_chunks = -(-cfg.events_per_day // cfg.chunk_size)
        per_session: dict[str, list[np.ndarray]] = {
            k: [] for k in ("session_id", "chunk", "user", "surface", "session_topic", "query", "start_u")
        }
        per_imp: dict[str, list[np.ndarray]] = {k: [] for k in ("session", "item", "r_engage", "gap_us", "delay_us")}
        n_before = 0
        for c in range(n_chunks):
            budget = min(cfg.chunk_size, cfg.events_per_day - c * cfg.chunk_size)
            for part in self._chunk_batches(day, c, budget):
                d = part["draws"]
                kept = int(np.count_nonzero(part["impression_row"] + part["first_row"] < budget))
                if kept == 0:
                    continue
                n_sess = int(d["sess"][kept - 1]) + 1  # impressions are in session order
                local = np.arange(n_sess, dtype=np.int64) + part["first_session"]
                per_session["session_id"].append((ordinal << _SESSION_ID_SHIFT) + c * cfg.chunk_size + local)
                per_session["chunk"].append(np.full(n_sess, c, dtype=np.int64))
                for key, name in (
                    ("user", "user"),
                    ("surface", "surface"),
                    ("session_topic", "session_topic"),
                    ("query", "query"),
                    ("start_u", "start_u"),
                ):
                    per_session[key].append(d[name][:n_sess])
                per_imp["session"].append(d["sess"][:kept] + n_before)
                for key in ("item", "r_engage", "gap_us", "delay_us"):
                    per_imp[key].append(d[key][:kept])
                n_before += n_sess

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)

        ses = {k: cat(v, np.float64 if k == "start_u" else np.int64) for k, v in per_session.items()}
        imp = {k: cat(v, np.float64 if k == "r_engage" else np.int64) for k, v in per_imp.items()}
        length = np.bincount(imp["session"], minlength=n_before).astype(np.int64)
        first = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
        position = np.arange(imp["session"].shape[0], dtype=np.int64) - first[imp["session"]]
        return DaySessions(day=day, first=first, length=length, position=position, **ses, **imp)

    def impression_probabilities(
        self, user: np.ndarray, item: np.ndarray, session_topic: np.ndarray, surface: np.ndarray, day: dt.date
    ) -> dict[str, np.ndarray]:
        """P(click), P(save), P(hide) of single impressions (equal-length arrays; `surface` as codes
        into SURFACES), given the session topic, with the drift in force on `day`: the engagement
        model every impression of the world follows (see the module docstring)."""
        tables = self._day_tables(self.is_drifted(day))
        item = np.asarray(item, dtype=np.int64)
        p = self._engagement_probabilities(
            tables,
            np.asarray(user, dtype=np.int64),
            self.item_topic[item],
            np.asarray(session_topic, dtype=np.int64),
            np.asarray(surface, dtype=np.int64),
        )
        return dict(zip(_ENGAGEMENTS, p))

    def session_topic_distribution(self, user_ids: np.ndarray, day: dt.date) -> np.ndarray:
        """P(session topic = t) for each user (len(user_ids) x n_topics) on `day`: the long-term
        interest ``(click + save) / 2`` (drifted on and after an interest_shift), with a share
        ``session_topic_off_interest`` replaced by a uniform topic."""
        user_ids = self._check_users(user_ids)
        prefs = self.preferences(day)
        interest = 0.5 * (prefs["click"][user_ids] + prefs["save"][user_ids])
        interest = interest / interest.sum(axis=1, keepdims=True)
        off = _ENGAGEMENT_MODEL["session_topic_off_interest"]
        return (1.0 - off) * interest + off / self.config.n_topics

    def expected_engagement(
        self, user_ids: np.ndarray, surface: str, day: dt.date, session_topics: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The true probability that an impression of item i to user u on `surface` on `day` gets
        each of click / save / hide: ``{outcome: (len(user_ids), n_items) float64}``.

        The session topic is not observed: it is marginalised over `session_topic_distribution`
        unless `session_topics` (one per user, e.g. a search query's topic) is given. Drift in
        force on `day` applies (interest_shift moves the affinities and the session-topic
        distribution, outcome_mix the surface rates). This is the open-loop engagement model:
        no position bias, no fatigue (`world.closed_loop` applies those).
        """
        day = _as_date(day)
        if surface not in SURFACES:
            raise ValueError(f"surface must be one of {SURFACES}, got {surface!r}")
        user_ids = self._check_users(user_ids)
        T = self.config.n_topics
        n = user_ids.shape[0]
        if session_topics is None:
            q = self.session_topic_distribution(user_ids, day)
        else:
            session_topics = np.asarray(session_topics, dtype=np.int64)
            if session_topics.shape != (n,) or (session_topics < 0).any() or (session_topics >= T).any():
                raise ValueError(f"session_topics must be {n} topic ids in [0, {T}), got shape {session_topics.shape}")
            q = np.zeros((n, T))
            q[np.arange(n), session_topics] = 1.0
        tables = self._day_tables(self.is_drifted(day))
        users = np.repeat(user_ids, T)
        topics = np.tile(np.arange(T, dtype=np.int64), n)
        code = np.full(n * T, SURFACES.index(surface), dtype=np.int64)
        # the item's topic is the session topic (boosted) or not; mix by P(session topic = item topic)
        inside = self._engagement_probabilities(tables, users, topics, topics, code)
        outside = self._engagement_probabilities(tables, users, topics, np.full(n * T, -1), code)
        out: dict[str, np.ndarray] = {}
        for name, p_in, p_out in zip(_ENGAGEMENTS, inside, outside):
            per_topic = q * p_in.reshape(n, T) + (1.0 - q) * p_out.reshape(n, T)
            out[name] = per_topic[:, self.item_topic]
        return out

    def parameters(self) -> dict[str, Any]:
        """The generating parameters, JSON-serialisable (lists, floats, ints, strings)."""
        cfg = self.config
        outcome_mix = cfg.drift_kind == "outcome_mix"
        drift: dict[str, Any] = {
            "day": None if cfg.drift_day is None else cfg.drift_day.isoformat(),
            "kind": cfg.drift_kind,
            "strength": float(cfg.drift_strength),
            # outcome_mix: rates from drift day on (click rates unchanged)
            "save_rate_factor": 1.0 - _DRIFT_SAVE_FACTOR * cfg.drift_strength if outcome_mix else 1.0,
            "hide_rate_factor": 1.0 + _DRIFT_HIDE_FACTOR * cfg.drift_strength if outcome_mix else 1.0,
            # interest_shift: pref_after = (1 - strength) * pref + strength * moved, where
            # moved[:, topic_shift[t]] = pref[:, t] (see `preferences(day)`)
            "topic_shift": self.topic_shift.tolist(),
            "surface_rates_after": {s: self._rates(s, cfg.drift_kind == "outcome_mix") for s in SURFACES},
        }
        return {
            "simulator_version": SIMULATOR_VERSION,
            "config": cfg.to_dict(),
            "surfaces": list(SURFACES),
            "queries_per_topic": QUERIES_PER_TOPIC,
            "engagement_model": dict(_ENGAGEMENT_MODEL),
            "surface_behaviour": {s: dict(b) for s, b in _SURFACE_BEHAVIOUR.items()},
            "surface_rates": {s: self._rates(s, False) for s in SURFACES},
            "item_topic": self.item_topic.tolist(),
            "item_popularity": self.item_popularity.tolist(),
            "user_activity": self.user_activity.tolist(),
            "user_click_topic_pref": self.click_pref.tolist(),
            "user_save_topic_pref": self.save_pref.tolist(),
            "query_topic": self.query_topic.tolist(),
            "drift": drift,
        }

    def save_parameters(self, path: str | Path) -> Path:
        """Write `parameters()` as JSON to `path`; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.parameters()))
        return path

    @staticmethod
    def load_parameters(path: str | Path) -> dict[str, Any]:
        """Read parameters written by `save_parameters`."""
        return json.loads(Path(path).read_text())

    @classmethod
    def from_parameters(cls, params: dict[str, Any]) -> SimulatedWorld:
        """Rebuild the world that produced `params` (the world is a function of its config)."""
        if params.get("simulator_version") != SIMULATOR_VERSION:
            raise ValueError(
                f"parameters were written by simulator version {params.get('simulator_version')!r}, "
                f"this is version {SIMULATOR_VERSION}"
            )
        return cls(SimulatorConfig.from_dict(params["config"]))

    # ------------------------------------------------------------------ internals

    def _check_day(self, day: dt.date) -> dt.date:
        day = _as_date(day)
        cfg = self.config
        if not cfg.start_date <= day <= cfg.end_date:
            raise ValueError(f"day {day} is outside the simulated range {cfg.start_date}..{cfg.end_date}")
        return day

    def _check_users(self, user_ids: np.ndarray) -> np.ndarray:
        user_ids = np.asarray(user_ids)
        if user_ids.ndim != 1 or (user_ids.size and user_ids.dtype.kind not in "iu"):
            raise ValueError(f"user_ids must be a 1-d array of ints, got {user_ids.dtype} of shape {user_ids.shape}")
        user_ids = user_ids.astype(np.int64)
        if user_ids.size and (user_ids.min() < 0 or user_ids.max() >= self.config.n_users):
            raise ValueError(f"user_ids must lie in [0, {self.config.n_users})")
        return user_ids

    def _rates(self, surface: str, outcome_drift: bool) -> dict[str, float]:
        b = _SURFACE_BEHAVIOUR[surface]
        rates = {"click": b["click_rate"], "save": b["save_rate"], "hide": b["hide_rate"]}
        if outcome_drift:
            s = float(self.config.drift_strength)
            rates["save"] *= 1.0 - _DRIFT_SAVE_FACTOR * s
            rates["hide"] *= 1.0 + _DRIFT_HIDE_FACTOR * s
        return rates

    def _pref(self, pref: np.ndarray, interest_drift: bool) -> np.ndarray:
        if not interest_drift:
            return pref
        s = float(self.config.drift_strength)
        moved = np.empty_like(pref)
        moved[:, self.topic_shift] = pref  # the mass on topic t moves to topic_shift[t]
        return (1.0 - s) * pref + s * moved

    def _day_tables(self, drifted: bool) -> dict[str, np.ndarray]:
        """Per-day-regime lookup tables (cached: one for before, one for after the drift)."""
        key = drifted
        if key not in self._tables:
            interest = drifted and self.config.drift_kind == "interest_shift"
            outcome = drifted and self.config.drift_kind == "outcome_mix"
            click = self._pref(self.click_pref, interest)
            save = self._pref(self.save_pref, interest)
            T = self.config.n_topics
            rates = np.array([[r["click"], r["save"], r["hide"]] for r in (self._rates(s, outcome) for s in SURFACES)])
            self._tables[key] = {
                # what a user is shown / seeks out long-term: both interests
                "interest_cdf": _row_cdf(0.5 * (click + save)),
                "click_affinity": (click * T).ravel(),
                "save_affinity": (save * T).ravel(),
                "rates": rates,
            }
        return self._tables[key]

    def _sample_topic_items(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        key = topics + (1.0 - rng.random(topics.shape[0]))  # in (t, t + 1]: lands in topic t
        pos = np.searchsorted(self._topic_item_key, key, side="left")
        return self._items_by_topic[np.minimum(pos, self._items_by_topic.shape[0] - 1)]

    def _sample_popular_items(self, n: int, rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(self._pop_cdf, rng.random(n), side="right")
        return np.minimum(pos, self.config.n_items - 1).astype(np.int64)

    def _draw_sessions(self, n: int, tables: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Every random number of a batch of `n` sessions, drawn before anyone reacts.

        Per session: ``surface``, ``user``, ``session_topic``, ``query`` (-1: none), ``length``,
        ``start_u`` (uniform, scaled to a start time once the session's duration is known).
        Per impression (sessions in order, then position): ``sess`` (batch-local session),
        ``item`` (the organic item shown), ``r_engage`` (uniform the reaction is read from),
        ``gap_us`` (time since the previous impression), ``delay_us`` (engagement delay).
        The draw order is the open-loop world's and must not change (it defines the days).
        """
        cfg = self.config
        T = cfg.n_topics
        m = _ENGAGEMENT_MODEL
        beh = [_SURFACE_BEHAVIOUR[s] for s in SURFACES]

        # --- per session
        share = np.array([b["session_share"] for b in beh])
        surface = np.searchsorted(np.cumsum(share) / share.sum(), rng.random(n), side="right")
        surface = np.minimum(surface, len(SURFACES) - 1)
        user = np.minimum(np.searchsorted(self._activity_cdf, rng.random(n), side="right"), cfg.n_users - 1)
        long_term_topic = _sample_rows(tables["interest_cdf"], user, T, rng)
        off = rng.random(n) < m["session_topic_off_interest"]
        session_topic = np.where(off, rng.integers(0, T, n), long_term_topic)
        query = np.full(n, -1, dtype=np.int64)
        is_search = surface == SURFACES.index("search")
        query[is_search] = self._queries_by_topic[
            session_topic[is_search], rng.integers(0, QUERIES_PER_TOPIC, int(is_search.sum()))
        ]
        mean_len = np.array([b["mean_impressions"] for b in beh])[surface]
        length = np.minimum(rng.geometric(1.0 / mean_len), _MAX_SESSION_IMPRESSIONS)

        # --- per impression: where each shown item comes from, and the item
        sess = np.repeat(np.arange(n), length)
        n_imp = sess.shape[0]
        s_imp = surface[sess]
        u_imp = user[sess]
        st_imp = session_topic[sess]
        src_p = np.array([[b["from_session_topic"], b["from_long_term"], b["from_popular"]] for b in beh])
        src_cdf = np.cumsum(src_p, axis=1) / src_p.sum(axis=1, keepdims=True)
        r = rng.random(n_imp)
        source = (r >= src_cdf[s_imp, 0]).astype(np.int8) + (r >= src_cdf[s_imp, 1])
        topic = st_imp.copy()
        lt = source == 1
        topic[lt] = _sample_rows(tables["interest_cdf"], u_imp[lt], T, rng)
        item = self._sample_topic_items(topic, rng)
        pop = source == 2
        item[pop] = self._sample_popular_items(int(pop.sum()), rng)

        # --- the reaction's uniform number, then timing
        r_engage = rng.random(n_imp)
        mean_gap_us = np.array([b["mean_gap_s"] for b in beh]) * 1e6
        gap = np.minimum(rng.exponential(1.0, n_imp) * mean_gap_us[s_imp], _MAX_GAP_US).astype(np.int64) + 1
        delay = (_MIN_ENGAGEMENT_DELAY_US + rng.exponential(_MEAN_ENGAGEMENT_DELAY_US, n_imp)).astype(np.int64)
        delay = np.minimum(delay, _MAX_ENGAGEMENT_DELAY_US)
        start_u = rng.random(n)
        return {
            "surface": surface,
            "user": user,
            "session_topic": session_topic,
            "query": query,
            "length": length,
            "start_u": start_u,
            "sess": sess,
            "item": item,
            "r_engage": r_engage,
            "gap_us": gap,
            "delay_us": delay,
        }

    def _engagement_probabilities(
        self,
        tables: dict[str, np.ndarray],
        user: np.ndarray,
        item_topic: np.ndarray,
        session_topic: np.ndarray,
        surface: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(click), P(save), P(hide) of impressions (arrays of equal length; codes, not names).

        An item's affinity is the user's long-term click (save) affinity, mixed for clicks with a
        boost when the item is in the session topic; ``h = 2a / (1 + a)`` maps it to [0, 2)
        (1 at average affinity) and scales the surface's base rate; hides use ``2 - h_click``.
        """
        T = self.config.n_topics
        m = _ENGAGEMENT_MODEL
        flat = user * T + item_topic
        in_session = item_topic == session_topic
        boost = m["session_topic_affinity"] * in_session
        wc, ws = m["click_session_weight"], m["save_session_weight"]
        a_click = (1.0 - wc) * tables["click_affinity"][flat] + wc * boost
        a_save = (1.0 - ws) * tables["save_affinity"][flat] + ws * boost
        h_click = 2.0 * a_click / (1.0 + a_click)  # in [0, 2), 1 at average affinity
        h_save = 2.0 * a_save / (1.0 + a_save)
        rates = tables["rates"][surface]
        p_click = rates[:, 0] * h_click
        p_save = rates[:, 1] * h_save
        p_hide = rates[:, 2] * (2.0 - h_click)  # unwanted items get hidden
        return p_click, p_save, p_hide

    def _sessions(self, n: int, tables: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Any]:
        """A batch of `n` whole sessions, as per-row arrays (impressions and engagements)."""
        d = self._draw_sessions(n, tables, rng)
        sess, item, length = d["sess"], d["item"], d["length"]
        n_imp = sess.shape[0]
        user, surface, session_topic = d["user"], d["surface"], d["session_topic"]

        # --- engagement (see module docstring): at most one outcome per impression
        p_click, p_save, p_hide = self._engagement_probabilities(
            tables, user[sess], self.item_topic[item], session_topic[sess], surface[sess]
        )
        engagement = _outcome_codes(d["r_engage"], p_click, p_save, p_hide)
        engaged = engagement > 0

        # --- timing: impressions spaced by gaps; an engagement follows its impression
        gap, delay = d["gap_us"], d["delay_us"]
        step = gap + np.where(engaged, delay, 0)
        csum = np.cumsum(step)
        first = np.concatenate([[0], np.cumsum(length)[:-1]])
        sess_csum_before = np.concatenate([[0], csum])[first]  # cumulative step before each session
        offset = csum - step - sess_csum_before[sess]  # exclusive, within session
        duration = np.add.reduceat(step, first) if n_imp else np.zeros(0, dtype=np.int64)
        start = (d["start_u"] * (_US_PER_DAY - duration)).astype(np.int64)  # duration << 1 day
        imp_ts = start[sess] + offset

        # --- rows: impression, then its engagement when there is one
        rows_per_imp = 1 + engaged.astype(np.int64)
        imp_row = np.cumsum(rows_per_imp) - rows_per_imp
        n_rows = int(imp_row[-1] + rows_per_imp[-1]) if n_imp else 0
        eng_row = imp_row[engaged] + 1
        out_sess = np.empty(n_rows, dtype=np.int64)
        out_item = np.empty(n_rows, dtype=np.int64)
        out_outcome = np.empty(n_rows, dtype=np.int8)
        out_ts = np.empty(n_rows, dtype=np.int64)
        out_sess[imp_row] = sess
        out_item[imp_row] = item
        out_ts[imp_row] = imp_ts
        out_outcome[imp_row] = _IMPRESSION
        out_sess[eng_row] = sess[engaged]
        out_item[eng_row] = item[engaged]
        out_ts[eng_row] = imp_ts[engaged] + delay[engaged]
        out_outcome[eng_row] = _ENGAGEMENT_CODES[engagement[engaged]]
        return {
            "session": out_sess,  # batch-local session index
            "item": out_item,
            "outcome": out_outcome,
            "ts_us": out_ts,  # microseconds since the start of the day
            "session_user": user,
            "session_surface": surface,
            "session_query": d["query"],
            "draws": d,
            "impression_row": imp_row,  # row of each impression in this batch
        }

    def _chunk_batches(self, day: dt.date, chunk_index: int, budget: int) -> list[dict[str, Any]]:
        """The batches of whole sessions chunk `chunk_index` of `day` draws (`_sessions` output,
        with chunk-local session indices); their rows reach `budget`, the chunk cuts them there."""
        cfg = self.config
        rng = _rng(cfg.seed, 1, day.toordinal(), chunk_index)
        tables = self._day_tables(self.is_drifted(day))

        # Sessions are drawn in batches until the row budget is reached; the batch sizes come
        # from the expected rows per session and the budget, so they are a function of the config.
        beh = [_SURFACE_BEHAVIOUR[s] for s in SURFACES]
        share = np.array([b["session_share"] for b in beh])
        mean_rows = float(np.dot(share / share.sum(), [b["mean_impressions"] * 1.15 for b in beh]))
        parts: list[dict[str, Any]] = []
        have = 0
        n_sessions = 0
        while have < budget:
            n = int((budget - have) / mean_rows * 1.05) + 8
            batch = self._sessions(n, tables, rng)
            batch["session"] = batch["session"] + n_sessions
            batch["first_session"] = n_sessions
            batch["first_row"] = have
            n_sessions += n
            parts.append(batch)
            have += batch["item"].shape[0]
        return parts

    def _chunk(self, day: dt.date, chunk_index: int, budget: int) -> pd.DataFrame:
        cfg = self.config
        ordinal = day.toordinal()
        parts = self._chunk_batches(day, chunk_index, budget)

        def cat(key: str) -> np.ndarray:
            return np.concatenate([p[key] for p in parts]) if len(parts) > 1 else parts[0][key]

        sess = cat("session")[:budget]
        item = cat("item")[:budget]
        outcome = cat("outcome")[:budget]
        ts_us = cat("ts_us")[:budget]
        user = cat("session_user")[sess]
        surface = cat("session_surface")[sess]
        query = cat("session_query")[sess]

        day_start_us = (ordinal - dt.date(1970, 1, 1).toordinal()) * _US_PER_DAY
        session_id = (ordinal << _SESSION_ID_SHIFT) + chunk_index * cfg.chunk_size + sess
        frame = pd.DataFrame(
            {
                "user_id": user.astype(np.int64),
                "item_id": item,
                "surface": np.array(SURFACES, dtype=object)[surface],
                "outcome": np.array(OUTCOMES, dtype=object)[outcome],
                "event_ts": pd.DatetimeIndex((ts_us + day_start_us).astype("datetime64[us]")).tz_localize("UTC"),
                "session_id": session_id.astype(np.int64),
                "query_id": pd.arrays.IntegerArray(np.maximum(query, 0), query < 0),
            }
        )
        return conform(frame)
