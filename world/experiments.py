"""Online experiments: users hashed into arms, and the policies that serve each arm.

An arm is a policy plus outcome weights. Users are assigned by a stable hash of their id (salted
separately from the canary's hash of (surface, user), so the canary share cuts across arms the
same way in every arm). Policies:

- `service`: the system itself, through the retrieval service's HTTP API (`/v1/retrieve`, in
  process over ASGI; an arm with `endpoint="/v1/recommend"` gets the service's ranked
  recommendations instead: retrieval of 200, the ranking head, the top k): the Feast online
  features plus the request's recent events, champion or canary by the user's hash, the arm's
  outcome weights;
- `popularity`: per surface, the items engaged most over recent days (the user's own engaged
  items left out);
- `oracle`: a callable that ranks by the world's true engagement probabilities (the ceiling);
- `random`: a uniformly random list (the floor).

A baseline model (e.g. SASRec) is a `service` policy over its own registry prefix: the same
serving code, a separately published champion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

ARM_SALT = "arm"


@dataclass(frozen=True)
class Arm:
    name: str
    policy: str  # a key of the policies passed to `ArmRouter`
    outcome_weights: Mapping[str, float] | None = None  # None: the serving version's defaults
    share: float = 1.0  # relative share of users
    endpoint: str | None = None  # a `service` policy's endpoint (None: /v1/retrieve)


def arm_fraction(user_id: int, salt: str = ARM_SALT) -> float:
    """A stable number in [0, 1) per user (independent of the canary's (surface, user) hash)."""
    digest = hashlib.blake2b(f"{salt}:{int(user_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_arm(user_id: int, arms: Sequence[Arm]) -> Arm:
    total = sum(a.share for a in arms)
    x = arm_fraction(user_id) * total
    for arm in arms:
        if x < arm.share:
            return arm
        x -= arm.share
    return arms[-1]


@dataclass(frozen=True)
class Request:
    """What a policy is asked: a user on a surface at a moment, with the events the user had that
    day before it (contract columns: item_id, outcome, surface, event_ts), and a search session's query."""

    user_id: int
    surface: str
    k: int
    recent_events: pd.DataFrame | None = None
    query_id: int | None = None  # a search session's query


@dataclass(frozen=True)
class Served:
    items: list[int]
    version: str
    served_by: str
    arm: str = ""
    propensities: list[float] | None = None  # per item (an answer with exploration slots)


class Policy(Protocol):
    def serve(self, requests: Sequence[Request], weights: Mapping[str, float] | None) -> list[Served]: ...


def recent_events_json(events: pd.DataFrame | None, limit: int = 200) -> list[dict[str, Any]]:
    """A request's `recent_events` as the API takes them (the newest `limit`)."""
    if events is None or len(events) == 0:
        return []
    rows = events.sort_values("event_ts", kind="stable").tail(limit)
    ts = pd.to_datetime(rows["event_ts"], utc=True).astype("int64") // 1000
    return [
        {"item_id": int(i), "outcome": str(o), "surface": str(s), "timestamp_us": int(t)}
        for i, o, s, t in zip(rows["item_id"], rows["outcome"], rows["surface"], ts)
    ]


class ServicePolicy:
    """The retrieval service's `/v1/retrieve`, called in process (ASGI) or over HTTP: what a client
    would get. A surface without a loaded version (503) serves nothing."""

    def __init__(self, app: Any = None, base_url: str | None = None, name: str = "service") -> None:
        if (app is None) == (base_url is None):
            raise ValueError("give the app (in process) or its base_url (over HTTP)")
        if app is not None:
            import warnings

            with warnings.catch_warnings():  # starlette would like httpx2; httpx 0.28 is what is pinned
                warnings.simplefilter("ignore", DeprecationWarning)
                from fastapi.testclient import TestClient

            # entered: the app's lifespan runs (the micro-batcher starts, versions are frozen after
            # loading) as under uvicorn; close() runs its shutdown
            self.client = TestClient(app).__enter__()
        else:
            import httpx

            self.client = httpx.Client(base_url=base_url, timeout=30.0)
        self.name = name
        self.errors: dict[int, int] = {}

    def close(self) -> None:
        if hasattr(self.client, "__exit__"):
            self.client.__exit__(None, None, None)
        else:
            self.client.close()

    def serve(
        self, requests: Sequence[Request], weights: Mapping[str, float] | None, endpoint: str = "/v1/retrieve"
    ) -> list[Served]:
        """`endpoint`: /v1/retrieve (candidates by retrieval) or /v1/recommend (ranked items)."""
        out = []
        listed = "items" if endpoint == "/v1/recommend" else "candidates"
        for r in requests:
            body: dict[str, Any] = {
                "user_id": int(r.user_id),
                "surface": r.surface,
                "k": int(r.k),
                "recent_events": recent_events_json(r.recent_events),
            }
            if weights is not None:
                body["outcome_weights"] = {o: float(w) for o, w in weights.items()}
            if r.query_id is not None:  # a search session's query
                body["query_id"] = int(r.query_id)
            response = self.client.post(endpoint, json=body)
            if response.status_code != 200:
                self.errors[response.status_code] = self.errors.get(response.status_code, 0) + 1
                out.append(Served([], "none", "none"))
                continue
            data = response.json()
            listed_items = data[listed]
            props = (
                [float(c["propensity"]) for c in listed_items] if all("propensity" in c for c in listed_items) else None
            )
            out.append(
                Served([int(c["item_id"]) for c in listed_items], data["version"], data["served_by"], "", props or None)
            )
        return out


@dataclass
class PopularityPolicy:
    """Per surface, items by engagements over recent days, best first; `fit` on the event table."""

    name: str = "popularity"
    engaged_outcomes: frozenset[str] = frozenset({"click", "save"})
    ranking: dict[str, np.ndarray] = field(default_factory=dict)
    version: str = "popularity"

    def fit(self, events: pd.DataFrame, label: str = "") -> PopularityPolicy:
        engaged = events[events["outcome"].isin(self.engaged_outcomes)]
        self.ranking = {
            s: g.groupby("item_id").size().sort_values(ascending=False, kind="stable").index.to_numpy()
            for s, g in engaged.groupby("surface")
        }
        self.version = f"popularity-{label}" if label else "popularity"
        return self

    def serve(self, requests: Sequence[Request], weights: Mapping[str, float] | None) -> list[Served]:
        out = []
        for r in requests:
            ranked = self.ranking.get(r.surface, np.zeros(0, dtype=np.int64))
            seen = set()
            if r.recent_events is not None and len(r.recent_events):
                seen = set(r.recent_events.loc[r.recent_events["outcome"].isin(self.engaged_outcomes), "item_id"])
            items = [int(i) for i in ranked[: r.k + len(seen)] if i not in seen][: r.k]
            out.append(Served(items, self.version, self.name))
        return out


def random_items(
    rng: np.random.Generator, n_items: int, k: int, exclude: Sequence[int] = (), spare: int | None = None
) -> list[int]:
    """Up to `k` distinct items of `[0, n_items)` in a uniformly random order, none of `exclude`:
    `k + spare` are drawn (`spare` None: as many as are excluded, so that k are left), the excluded
    dropped. The random list of the experiment's `random` arm and of the policy loop's."""
    excluded = {int(i) for i in exclude}
    spare = len(excluded) if spare is None else spare
    drawn = rng.choice(n_items, size=min(n_items, k + spare), replace=False)
    return [int(i) for i in drawn if int(i) not in excluded][:k]


@dataclass
class RandomPolicy:
    """A uniformly random list per request, the items the user engaged with that day left out:
    the floor a ranked list has to beat. Each slot's propensity is logged as 1 / n_items (the
    chance that this item was drawn into it), as for an exploration slot. The draws follow
    `seed` and the order of the requests over every call (the world's, deterministic)."""

    n_items: int
    seed: int = 0
    name: str = "random"
    engaged_outcomes: frozenset[str] = frozenset({"click", "save"})

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)  # one stream for the policy's life (a day's windows)

    def serve(self, requests: Sequence[Request], weights: Mapping[str, float] | None) -> list[Served]:
        rng = self.rng
        out = []
        for r in requests:
            seen: list[int] = []
            if r.recent_events is not None and len(r.recent_events):
                engaged = r.recent_events["outcome"].isin(self.engaged_outcomes)
                seen = r.recent_events.loc[engaged, "item_id"].tolist()
            items = random_items(rng, self.n_items, r.k, seen)
            out.append(Served(items, self.name, self.name, "", [1.0 / self.n_items] * len(items)))
        return out


@dataclass
class OraclePolicy:
    """Ranks by the world's true expected engagements: `expected(user_ids, surface) -> {outcome:
    (n_users, n_items)}` (e.g. world.simulator.SimulatedWorld.expected_engagement for the day),
    weighted by the arm's outcome weights."""

    expected: Callable[[np.ndarray, str], Mapping[str, np.ndarray]]
    default_weights: Mapping[str, float] = field(default_factory=lambda: {"click": 1.0, "save": 1.0})
    name: str = "oracle"

    def serve(self, requests: Sequence[Request], weights: Mapping[str, float] | None) -> list[Served]:
        weights = dict(weights or self.default_weights)
        out: list[Served | None] = [None] * len(requests)
        by_surface: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_surface.setdefault(r.surface, []).append(i)
        for surface, idx in by_surface.items():
            users, rows = np.unique(np.array([requests[i].user_id for i in idx], dtype=np.int64), return_inverse=True)
            probs = self.expected(users, surface)  # once per batch, for its distinct users
            score = sum(float(w) * np.asarray(probs[o]) for o, w in weights.items() if o in probs)
            for row, i in zip(rows, idx):
                r = requests[i]
                s = np.array(score[row], dtype=np.float64, copy=True)
                if r.recent_events is not None and len(r.recent_events):
                    engaged = r.recent_events.loc[r.recent_events["outcome"].isin(weights), "item_id"].to_numpy()
                    s[engaged[(engaged >= 0) & (engaged < s.shape[0])]] = -np.inf
                top = np.argpartition(-s, min(r.k, s.shape[0] - 1))[: r.k]
                top = top[np.argsort(-s[top], kind="stable")]
                out[i] = Served([int(t) for t in top], self.name, self.name)
        return out  # type: ignore[return-value]


class ArmRouter:
    """Sends each request to its user's arm's policy (batched per arm) and tags what it served."""

    def __init__(self, arms: Sequence[Arm], policies: Mapping[str, Policy]) -> None:
        missing = {a.policy for a in arms} - set(policies)
        if missing:
            raise ValueError(f"arms name policies that are not given: {sorted(missing)}")
        self.arms, self.policies = list(arms), dict(policies)

    def arm_of(self, user_id: int) -> Arm:
        return assign_arm(user_id, self.arms)

    def serve(self, requests: Sequence[Request]) -> list[Served]:
        out: list[Served | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(self.arm_of(r.user_id).name, []).append(i)
        by_name = {a.name: a for a in self.arms}
        for name, idx in groups.items():
            arm = by_name[name]
            extra = {"endpoint": arm.endpoint} if arm.endpoint else {}
            served = self.policies[arm.policy].serve([requests[i] for i in idx], arm.outcome_weights, **extra)
            for i, s in zip(idx, served):
                out[i] = Served(s.items, s.version, s.served_by, arm.name, s.propensities)
        return out  # type: ignore[return-value]


# The arms of the closed-loop experiment (issue 13): the production configuration and its outcome
# weight knob on the system's own serving path, two identical arms for the noise floor, and the
# baselines. `pinrec-save*` weigh saves against clicks on every surface they serve. `unipinrec`
# (issue 17) is the same champion through /v1/recommend: 200 retrieved, ranked by its ranking head.
EXPERIMENT_ARMS: tuple[Arm, ...] = (
    Arm("popularity", "popularity"),
    Arm("sasrec", "sasrec"),
    Arm("pinrec", "service"),
    Arm("unipinrec", "service", endpoint="/v1/recommend"),
    Arm("pinrec-save0", "service", {"click": 1.0, "save": 0.0}),
    Arm("pinrec-save05", "service", {"click": 1.0, "save": 0.5}),
    Arm("pinrec-save1", "service", {"click": 1.0, "save": 1.0}),
    Arm("oracle", "oracle"),
    Arm("aa-1", "service"),
    Arm("aa-2", "service"),
    Arm("random", "random"),  # issue 27: a uniformly random list, the floor
)


def select_arms(names: Sequence[str] | None, arms: Sequence[Arm] = EXPERIMENT_ARMS) -> list[Arm]:
    """The arms a run compares, in the order of `arms` (None or empty: all of them); an unknown
    name is a ValueError that lists the arms there are."""
    unknown = sorted(set(names or ()) - {a.name for a in arms})
    if unknown:
        raise ValueError(f"unknown arms {unknown}; the arms are {', '.join(a.name for a in arms)}")
    return [a for a in arms if not names or a.name in names]
