"""The chaos soak's faults: which kinds, when (seeded), and the client that keeps asking the
service while they happen (benchmarks/chaos.py runs them)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from devstack.service import call

FIRST = date(2026, 1, 1)
KINDS = ("s3_outage", "kill_run", "corrupt_object", "truncate_source", "service_restart")
DELAYS_S = {  # seeded delay after the day began (kill_run: after its nightly run began)
    "s3_outage": (5.0, 60.0),
    "kill_run": (5.0, 40.0),
    "corrupt_object": (0.0, 30.0),
    "truncate_source": (0.0, 0.0),
    "service_restart": (0.0, 0.0),
}
VERSION_FILES = ("model.pt", "index.faiss", "item_ids.npy")
CHILD_SETTLE_S = 30.0  # no fault while a (re)started live process is starting up


@dataclass
class Fault:
    kind: str
    day: date  # armed from the start of this day (moves on to the next if its moment never comes)
    delay_s: float
    params: dict[str, Any] = field(default_factory=dict)
    injected_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    survived: bool | None = None
    reason: str = ""


def schedule_faults(seed: int, days: int, warmup_days: int, per_kind: int) -> list[Fault]:
    """Each kind `per_kind` times, spread over the served days in a seeded order (as few on one
    day as the count allows), each with a seeded delay into its day."""
    rng = random.Random(seed)
    # served days; the last one is kept free when there are three or more, for a fault whose
    # moment never came on its day (it strikes the next day)
    served = list(range(warmup_days + 1, days if days - warmup_days >= 3 else days + 1))
    kinds = [kind for kind in KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    order = rng.sample(served, len(served))
    faults = []
    for i, kind in enumerate(kinds):
        lo, hi = DELAYS_S[kind]
        faults.append(
            Fault(
                kind,
                FIRST + timedelta(days=order[i % len(order)] - 1),
                round(rng.uniform(lo, hi), 1),
                {"pick": rng.random(), "fraction": round(rng.uniform(0.2, 0.8), 3), "file": rng.choice(VERSION_FILES)},
            )
        )
    return sorted(faults, key=lambda f: (f.day, KINDS.index(f.kind)))


class Client(threading.Thread):
    """Queries the current service continuously: POST /v1/retrieve for random users and surfaces."""

    def __init__(self, surfaces: list[str], users: int, rate: float, seed: int) -> None:
        super().__init__(name="chaos-client", daemon=True)
        self.surfaces, self.users, self.interval = surfaces, users, 1.0 / rate
        self.rng = random.Random(seed)
        self.port: int | None = None
        self.stop_event = threading.Event()
        self.statuses: dict[int, int] = {}
        self.failures: list[tuple[float, str]] = []  # connection errors and timeouts
        self.server_errors: list[tuple[float, int, str]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            port = self.port
            if port is None:
                continue
            body = {"user_id": self.rng.randrange(self.users), "surface": self.rng.choice(self.surfaces), "k": 20}
            try:
                status, answer, _ = call("127.0.0.1", port, "POST", "/v1/retrieve", body, timeout=30)
            except OSError as exc:
                with self.lock:
                    self.failures.append((time.time(), f"{type(exc).__name__}: {exc}"))
                continue
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status >= 500:
                    self.server_errors.append((time.time(), status, str(answer)[:200]))

    def errors_between(self, t0: float, t1: float) -> int:
        with self.lock:
            return sum(1 for t, _, _ in self.server_errors if t0 <= t <= t1) + sum(
                1 for t, _ in self.failures if t0 <= t <= t1
            )
