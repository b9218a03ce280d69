"""closed_loop_world: seconds per simulated day spent inside the closed-loop world.

Runs `world.closed_loop.ClosedLoopWorld` over consecutive days of a simulated world (default:
2,000 users, 5,000 items, 50,000 events/day, 30 days), `LoopConfig()` defaults, the fatigue
history updated day by day as a runner would. The recommender is a cheap deterministic stand-in
(a per-user slice of the popularity order, minus the items the request's recent events show):
its time is measured and excluded, so `seconds_per_day` is the world's own cost (sessions,
requests with their recent events, placement, reactions, rows, serving log).
`history_update_seconds_per_day` is `FatigueHistory.update`. Target: `seconds_per_day` <= 60
(the world must not be the closed loop's bottleneck).

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.closed_loop_world --days 30
    # smoke run, results elsewhere:
    PYTHONPATH=. .venv/bin/python -m benchmarks.closed_loop_world --days 2 --out-dir /tmp/clw
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.results import argument_parser, print_table, write_results
from world.closed_loop import ClosedLoopWorld, FatigueHistory, LoopConfig, Served, SessionRequest
from world.simulator import SimulatedWorld, SimulatorConfig

NAME = "closed_loop_world"


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__file__, __doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--events-per-day", type=int, default=50_000)
    parser.add_argument("--out-dir", default=None, help="where to write results (default benchmarks/results)")
    parser.add_argument("--notes", default="", help="what else ran on the machine")
    args = parser.parse_args(argv)

    config = SimulatorConfig(
        seed=0, n_users=args.users, n_items=args.items, events_per_day=args.events_per_day, n_days=args.days
    )
    world = SimulatedWorld(config)
    closed = ClosedLoopWorld(world, LoopConfig())
    popular = np.argsort(-world.item_popularity, kind="stable")
    recommend_seconds = [0.0]

    def recommend(requests: list[SessionRequest]) -> list[Served]:
        t = time.perf_counter()
        out = []
        for r in requests:
            seen = set(r.recent_events["item_id"].tolist())
            start = (r.user_id * 7) % max(1, config.n_items - r.k - 20)
            items = [int(i) for i in popular[start : start + r.k + 20] if int(i) not in seen][: r.k]
            out.append(Served(items=items, version="bench", arm="popularity-slice", served_by="champion"))
        recommend_seconds[0] += time.perf_counter() - t
        return out

    history = FatigueHistory()
    per_day, updates, recs, rows, requests = [], [], [], [], []
    for day in world.days():
        recommend_seconds[0] = 0.0
        t0 = time.perf_counter()
        result = closed.day(day, recommend, history)
        t1 = time.perf_counter()
        history.update(result.events)
        t2 = time.perf_counter()
        per_day.append(t1 - t0 - recommend_seconds[0])
        updates.append(t2 - t1)
        recs.append(recommend_seconds[0])
        rows.append(len(result.events))
        requests.append(result.requests)
        print(
            f"{day}: {per_day[-1]:.2f} s in the world, {recs[-1]:.2f} s recommender, {updates[-1]:.2f} s history "
            f"update, {rows[-1]} rows, {requests[-1]} requests",
            flush=True,
        )

    row = {
        "name": f"world-{args.users}u-{args.items}i-{args.events_per_day}epd",
        "days": args.days,
        "seconds_per_day": statistics.median(per_day),
        "max_seconds_per_day": max(per_day),
        "history_update_seconds_per_day": statistics.median(updates),
        "recommender_seconds_per_day_excluded": statistics.median(recs),
        "rows_per_day": statistics.median(rows),
        "requests_per_day": statistics.median(requests),
    }
    print_table([row])
    notes = ("medians over the days; the stand-in recommender's time is excluded. " + args.notes).strip()
    write_results(
        NAME, [row], {"seconds_per_day": 60.0}, notes, out_dir=args.out_dir, lower_is_better={"seconds_per_day"}
    )


if __name__ == "__main__":
    main()
