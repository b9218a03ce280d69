"""A seeded multi-surface world that produces event tables in the contract (`events.contract`).

The world gives PinRec's ideas something to find: latent long-term topic interests that differ by
outcome (what users save is not what they click), session topics that pull clicks off those
interests (the time offset carries signal), search sessions that follow a query, related sessions
that follow a seed item, three surfaces with their own engagement rates (most impressions are not
engaged), and drift injected from a given day (``outcome_mix`` or ``interest_shift``).

Every impression is a row with outcome ``impression``; an engaged impression is followed 1 to 60
s later by one ``click``, ``save`` or ``hide`` row. A day has exactly ``events_per_day`` rows, made
chunk by chunk (memory bounded by ``chunk_size``), byte-identical for the same config whatever
other days were generated. `expected_engagement` gives the true per-(user, item) probabilities
(for the oracle and the benchmarks' reference rows only); `day_sessions` exposes a day's sessions
and random numbers before anyone reacts, which `world.closed_loop` uses. The rules, the count
rule, the seeds and the ids are in docs/simulated-world.md; the parameters in `world.parameters`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from events.contract import OUTCOMES, SURFACES, conform
from world.parameters import (
    _DRIFT_HIDE_FACTOR,
    _DRIFT_SAVE_FACTOR,
    _ENGAGEMENT_CODES,
    _ENGAGEMENT_MODEL,
    _ENGAGEMENTS,
    _IMPRESSION,
    _MAX_ENGAGEMENT_DELAY_US,
    _MAX_GAP_US,
    _MAX_SESSION_IMPRESSIONS,
    _MEAN_ENGAGEMENT_DELAY_US,
    _MIN_ENGAGEMENT_DELAY_US,
    _SESSION_ID_SHIFT,
    _SURFACE_BEHAVIOUR,
    _US_PER_DAY,
    DRIFT_KINDS,
    QUERIES_PER_TOPIC,
    SIMULATOR_VERSION,
    SimulatorConfig,
    _outcome_codes,
)
from world.sessions import DaySessions, _as_date, _rng, _row_cdf, _sample_rows

__all__ = [
    "DRIFT_KINDS",
    "QUERIES_PER_TOPIC",
    "DaySessions",
    "SimulatedWorld",
    "SimulatorConfig",
]


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
