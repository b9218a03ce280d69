"""The world's parameters: the knobs of a world (`SimulatorConfig`), its fixed rules (the
engagement model, each surface's behaviour, drift factors) and the codes its rows use. The rules
are described in docs/simulated-world.md; changing one needs a reason from DESIGN.md and a note
there."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any, Literal

import numpy as np

from events.contract import OUTCOMES, SURFACES

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
