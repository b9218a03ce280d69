"""The paired policy harness: every policy serves every user of the same closed-loop days.

1. `log_run(cfg)`: the log the models learn from. Days ``1 .. train_days`` of the closed-loop
   world served by the logging policy (popularity of the log's own last 7 days, with an
   exploration share of uniformly random slots, each slot's propensity in the serving log),
   then ``yardstick_days`` more days of the same policy: the held-out log the offline yardstick
   reads (`serving.evaluation.yardstick`).
2. `serve(policy, run, cfg)`: the policy serves days ``train_days + 1 .. train_days + serve_days``
   starting from the log's state at the end of day ``train_days`` (users' sequences, fatigue
   history), seeing only its own log from then on. Common random numbers: the world's sessions,
   examination and reaction uniforms are drawn per impression from the world's seeds, before
   anything is served (`world.closed_loop`), so two policies differ only by what they served;
   a user's figures depend on what that user was served and nothing else (no user's state reads
   another user's, except through a policy that learns from all its users, e.g. popularity).
3. `compare(outcomes, reference)`: per policy saves / clicks / hides per 1,000 served slots
   (served slots: slots a served list filled; an unexamined slot counts, as on a screen),
   coverage (distinct served items / catalogue), a 95% bootstrap half-width over users, and the
   paired difference of each policy's rate minus the reference's with a 95% bootstrap interval
   (the same resampled users for both: ratio of sums over the resampled users).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from events.contract import SURFACES
from serving.service.exploration import ExplorationConfig, explore
from world.closed_loop import ClosedLoopWorld, FatigueHistory, LoopConfig, Served, SessionRequest
from world.policy_loop.policies import LoopView, Policy, PopularityPolicy, SequenceStore, stable_seed
from world.simulator import SimulatedWorld, SimulatorConfig

OUTCOMES_COUNTED = ("save", "click", "hide")


@dataclass(frozen=True)
class HarnessConfig:
    """The world, the loop, and which days train, hold out and serve."""

    world: SimulatorConfig = SimulatorConfig(seed=0, n_users=2000, n_items=5000, events_per_day=50_000, n_days=17)
    loop: LoopConfig = LoopConfig()
    train_days: int = 7  # days 1..7: the log models train on
    serve_days: int = 10  # days 8..17: every policy serves them
    # days 8..17 of the logging policy: the offline yardstick's log (ten days: the replay's
    # sample; three held a third of it)
    yardstick_days: int = 10
    exploration_share: float = 0.05  # the logging policy's uniformly random slots, every surface
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_days < 1 or self.serve_days < 1 or self.yardstick_days < 1:
            raise ValueError("HarnessConfig: train_days, serve_days and yardstick_days must be >= 1")
        need = self.train_days + max(self.serve_days, self.yardstick_days)
        if self.world.n_days < need:
            raise ValueError(f"HarnessConfig: the world has {self.world.n_days} days, the harness needs {need}")

    @classmethod
    def quick(cls) -> HarnessConfig:
        """A small world for tests and smoke runs."""
        world = SimulatorConfig(seed=0, n_users=200, n_items=600, n_topics=8, events_per_day=5000, n_days=6)
        return cls(world=world, train_days=3, serve_days=3, yardstick_days=2, bootstrap=300)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["world"] = self.world.to_dict()
        return out

    def days(self) -> list[dt.date]:
        return SimulatedWorld(self.world).days()


@dataclass
class LogRun:
    """The logging policy's days: the models' training log and the yardstick's held-out log."""

    cfg: HarnessConfig
    world: ClosedLoopWorld
    train_events: pd.DataFrame
    train_serving_log: pd.DataFrame
    heldout_events: pd.DataFrame
    heldout_serving_log: pd.DataFrame
    history: FatigueHistory  # through the last training day
    sequences: SequenceStore  # users' sequences at the end of the last training day
    daily_events: list[pd.DataFrame]  # the training days' events, one frame per day

    @property
    def train_days(self) -> list[dt.date]:
        return self.cfg.days()[: self.cfg.train_days]

    @property
    def serve_days(self) -> list[dt.date]:
        return self.cfg.days()[self.cfg.train_days : self.cfg.train_days + self.cfg.serve_days]


class ExploringPolicy(Policy):
    """A policy whose lists get an exploration share (`serving.service.exploration`); the draws
    depend only on (seed, session id)."""

    def __init__(self, base: Policy, exploration: ExplorationConfig, seed: int = 0) -> None:
        self.base, self.exploration, self.seed = base, exploration, seed
        self.name = f"{base.name}+explore"

    def start_day(self, view: LoopView) -> None:
        self.base.start_day(view)

    def recommend(self, requests: list[SessionRequest], view: LoopView) -> list[Served]:
        out = []
        for r, s in zip(requests, self.base.recommend(requests, view)):
            rng = np.random.default_rng(stable_seed("explore", self.seed, r.session_id))
            seen = view.sequences.get(r.user_id, r.recent_events).item_ids
            items, props = explore(s.items, r.k, view.n_items, self.exploration.share(r.surface), rng, seen)
            out.append(Served(items, s.version, s.arm, s.served_by, props))
        return out

    def score(self, users, items, surface, view, sequences=None):
        return self.base.score(users, items, surface, view, sequences)


def play_days(policy: Policy, view: LoopView, days: list[dt.date]) -> list:
    """`policy` serves `days` in order, its own log growing in `view`; the days' results."""
    results = []
    for day in days:
        view.day = day
        policy.start_day(view)
        result = view.world.day(day, lambda requests: policy.recommend(requests, view), view.history)
        view.history.update(result.events)
        view.sequences.update(result.events)
        view.events.append(result.events)
        results.append(result)
    return results


def log_run(cfg: HarnessConfig) -> LogRun:
    """The logging policy's training and held-out days (module docstring)."""
    world = ClosedLoopWorld(SimulatedWorld(cfg.world), cfg.loop)
    days = cfg.days()
    logging_policy = ExploringPolicy(
        PopularityPolicy(), ExplorationConfig.uniform(cfg.exploration_share, SURFACES), cfg.seed
    )
    view = LoopView(world, days[0], SequenceStore(), FatigueHistory())
    train = play_days(logging_policy, view, days[: cfg.train_days])
    history, sequences, daily = view.history.before(days[cfg.train_days]), view.sequences.copy(), list(view.events)
    heldout = play_days(logging_policy, view, days[cfg.train_days : cfg.train_days + cfg.yardstick_days])
    return LogRun(
        cfg=cfg,
        world=world,
        train_events=pd.concat([r.events for r in train], ignore_index=True),
        train_serving_log=pd.concat([r.serving_log for r in train], ignore_index=True),
        heldout_events=pd.concat([r.events for r in heldout], ignore_index=True),
        heldout_serving_log=pd.concat([r.serving_log for r in heldout], ignore_index=True),
        history=history,
        sequences=sequences,
        daily_events=daily,
    )


def start_view(run: LogRun, day: dt.date | None = None) -> LoopView:
    """A fresh view of the log at the end of the training days (each policy gets its own)."""
    return LoopView(
        run.world,
        day or run.serve_days[0],
        run.sequences.copy(),
        run.history.before(run.serve_days[0]),
        list(run.daily_events),
    )


@dataclass
class PolicyOutcome:
    """What one policy's served slots got, per user (users 0..n_users-1)."""

    name: str
    slots: np.ndarray
    counts: dict[str, np.ndarray]  # outcome -> per user
    items_served: np.ndarray  # distinct items served
    seconds: float
    requests: int = 0
    extra: dict = field(default_factory=dict)


def serve(policy: Policy, run: LogRun) -> PolicyOutcome:
    """`policy` serves the harness's served days (module docstring)."""
    t0 = time.perf_counter()
    view = start_view(run)
    results = play_days(policy, view, run.serve_days)
    log = pd.concat([r.serving_log for r in results], ignore_index=True)
    n_users = run.cfg.world.n_users
    users = log["user_id"].to_numpy(np.int64)
    outcome = log["outcome"].to_numpy()
    return PolicyOutcome(
        name=policy.name,
        slots=np.bincount(users, minlength=n_users).astype(np.float64),
        counts={o: np.bincount(users[outcome == o], minlength=n_users).astype(np.float64) for o in OUTCOMES_COUNTED},
        items_served=np.unique(log["item_id"].to_numpy(np.int64)),
        seconds=time.perf_counter() - t0,
        requests=sum(r.requests for r in results),
    )


def _bootstrap_weights(n_users: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n_users) multiplicities of users resampled with replacement (the same for every
    policy: that is what pairs them)."""
    rng = np.random.default_rng(stable_seed("bootstrap", seed))
    return np.stack([np.bincount(rng.integers(0, n_users, n_users), minlength=n_users) for _ in range(draws)]).astype(
        np.float64
    )


def compare(
    outcomes: Mapping[str, PolicyOutcome], reference: str, n_items: int, draws: int = 1000, seed: int = 0
) -> list[dict]:
    """One row per policy (module docstring, step 3), in the order given."""
    if reference not in outcomes:
        raise ValueError(f"the reference policy {reference!r} was not served (served: {sorted(outcomes)})")
    n_users = len(next(iter(outcomes.values())).slots)
    weights = _bootstrap_weights(n_users, draws, seed)

    def boot(o: PolicyOutcome, outcome: str) -> np.ndarray:
        return 1000.0 * (weights @ o.counts[outcome]) / np.maximum(weights @ o.slots, 1.0)

    ref = outcomes[reference]
    ref_boot = {o: boot(ref, o) for o in ("save", "click")}
    rows = []
    for name, o in outcomes.items():
        total = max(o.slots.sum(), 1.0)
        row = {"name": name}
        for outcome in OUTCOMES_COUNTED:
            row[f"{outcome}s_per_1k"] = round(1000.0 * o.counts[outcome].sum() / total, 3)
        row["coverage"] = round(len(o.items_served) / n_items, 4)
        b = boot(o, "save")
        row["ci95_saves_per_1k"] = round(float(np.percentile(b, 97.5) - np.percentile(b, 2.5)) / 2, 3)
        for outcome in ("save", "click"):
            point = 1000.0 * (o.counts[outcome].sum() / total - ref.counts[outcome].sum() / max(ref.slots.sum(), 1.0))
            diff = (b if outcome == "save" else boot(o, outcome)) - ref_boot[outcome]
            key = f"paired_{outcome}s_vs_{reference}"
            row[key] = round(point, 3)
            row[f"{key}_lo"] = round(float(np.percentile(diff, 2.5)), 3)
            row[f"{key}_hi"] = round(float(np.percentile(diff, 97.5)), 3)
        row["served_slots"] = int(o.slots.sum())
        row["serve_seconds"] = round(o.seconds, 1)
        rows.append(row)
    return rows


def pair_agreement(
    outcomes: Mapping[str, PolicyOutcome],
    values: Mapping[str, float],
    outcome: str = "save",
    draws: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """How often an offline measure orders two policies as their users do, over the pairs users
    tell apart: every pair of policies whose paired 95% bootstrap interval of `outcome`s per 1,000
    served slots excludes 0. Spearman over every policy also counts pairs within sampling error
    of each other, where no measure can be right but by chance; this counts only the resolved
    ones. {"pairs": resolved pairs, "agreement": share of them the measure orders the same way}."""
    names = [n for n in outcomes if n in values and np.isfinite(values[n])]
    if len(names) < 2:
        return {"pairs": 0.0, "agreement": float("nan")}
    weights = _bootstrap_weights(len(outcomes[names[0]].slots), draws, seed)
    rate = {
        n: 1000.0 * (weights @ outcomes[n].counts[outcome]) / np.maximum(weights @ outcomes[n].slots, 1.0)
        for n in names
    }
    resolved = agreed = 0
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            lo, hi = np.percentile(rate[a] - rate[b], [2.5, 97.5])
            if lo > 0 or hi < 0:
                resolved += 1
                agreed += int(np.sign(values[a] - values[b]) == (1 if lo > 0 else -1))
    return {"pairs": float(resolved), "agreement": agreed / resolved if resolved else float("nan")}


def with_days(cfg: HarnessConfig, **changes) -> HarnessConfig:
    """`cfg` with other day counts, the world grown to hold them."""
    days = {k: changes.get(k, getattr(cfg, k)) for k in ("train_days", "serve_days", "yardstick_days")}
    need = days["train_days"] + max(days["serve_days"], days["yardstick_days"])
    return replace(cfg, world=replace(cfg.world, n_days=max(need, 1)), **days)


def policy_lister(policy: Policy, view: LoopView, run: LogRun):
    """`policy`'s lists as of the held-out days' start (`serving.evaluation.replay.Lister`): what
    it serves a request of (user, surface, query, k) then, its own seen-item filter applied."""
    ts = dt.datetime.combine(run.serve_days[0], dt.time(), tzinfo=dt.UTC)
    empty = run.heldout_events.iloc[:0]

    def lister(users, surface: str, k: int, queries) -> list[list[int]]:
        requests = [SessionRequest(int(u), surface, -1 - int(u), ts, empty, q, k) for u, q in zip(users, queries)]
        return [list(served.items) for served in policy.recommend(requests, view)]

    return lister


def offline_measures(policy: Policy, run: LogRun, k: int = 50, k_surface: int = 100) -> dict[str, dict[str, float]]:
    """Every offline candidate measure of `policy` on the held-out log (`yardstick`, `replay`): the
    policy scores the held-out days' logged impressions with what the log held at their start;
    replays them against its own top 50 / 100 / 200 per (user, surface) at that time; recall@k of
    the held-out engagements by its top k for each user (homefeed), plain and inverse-propensity
    weighted (`ips_recall_at_k`); and the weighted recall of each engagement by the user's top
    `k_surface` on the engagement's own surface (the canary's list size)."""
    from serving.evaluation.replay import policy_lists, replay_measures
    from serving.evaluation.yardstick import candidate_measures, ips_recall_at_k, logged_impressions, recall_at_k

    view = start_view(run)
    policy.start_day(view)

    def score(users, items, surface):
        return policy.score(users, items, surface, view, [view.sequences.get(u) for u in users])

    impressions = logged_impressions(run.heldout_events, run.heldout_serving_log)
    out = candidate_measures(score, impressions)
    future = run.heldout_events
    engaged = future[future["outcome"].isin(["click", "save"])]
    lister = policy_lister(policy, view, run)
    out.update(replay_measures(policy_lists(lister, impressions, 200), impressions, (50, 100, 200)))

    def top(surface: str, users, n: int) -> dict[int, list[int]]:
        lists = {}
        for a in range(0, len(users), 256):
            part = users[a : a + 256]
            lists.update(zip(part, lister(part, surface, n, [None] * len(part))))
        return lists

    lists = top("homefeed", sorted(set(engaged["user_id"].tolist())), k)
    out[f"recall{k}"] = recall_at_k(lists, future)
    out[f"ips_recall{k}"] = ips_recall_at_k(lists, future)
    per_surface = {}
    for surface, users in engaged.groupby("surface")["user_id"]:
        per_surface.update({(u, str(surface)): v for u, v in top(str(surface), sorted(set(users)), k_surface).items()})
    out[f"ips_recall{k_surface}_surface"] = ips_recall_at_k(per_surface, future, by_surface=True)
    return out
