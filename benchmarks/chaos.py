"""Benchmark `chaos`: the living system under injected faults (issue 18, the soak).

    PYTHONPATH=. .venv/bin/python -m benchmarks.chaos                      # the full run: 10 days
    PYTHONPATH=. .venv/bin/python -m benchmarks.chaos --days 5 --warmup-days 2 --users 200 \\
        --items 600 --events 6000 --faults-per-kind 1 --no-write           # smoke

In a temporary folder with its own SeaweedFS and Dagster instance, `pinrec-ops live` (the closed
loop, `orchestration.live.LiveRunner`, as `benchmarks/closed_loop.py` drives it) plays the days in a
child process, against this S3 server (`--external-s3`). From the first champions on, the
operator's retrieval service (`python -m serving.service.cli serve`, a real process reading the Feast
online store the loop materializes) serves the registry, and a client thread queries it
throughout (random users and surfaces, `--client-rate` requests per second). Faults are injected
at seeded random points of the served days (`--seed`; each kind `--faults-per-kind` times, on a
random day, a random delay after the day began):

* `s3_outage`: the S3 server stopped for `--outage-s` (20 s), then started again at the same
  address with the same credentials (`SeaweedFS.stop()` / `start()`; the data persists);
* `kill_run`: the `pinrec-ops live` process SIGKILLed while a step of one of its runs is in
  progress (the step dies halfway; a seeded delay after the day's nightly run began), then
  started again, as an operator would;
* `corrupt_object`: a file of a published version (the canary of a random surface if it has one,
  else its champion) overwritten in S3 with bytes of the same size; a new service process (a
  fresh cache: a new pod) is started as a probe right after, and again once the day's runs are
  done (by then the system must have repaired, rolled back or replaced a damaged champion);
* `truncate_source`: the world's `date=D/events.parquet` cut short right after the world wrote it;
* `service_restart`: the service restarted during a promotion (while a step of the online canary
  stage runs: `*/canary_trial`, `*/champion`, `*/canary_release`; the new process starts while
  pointers move): the client moves to the new process once it is ready for every surface
  (`/readyz/{surface}`), then the old one is stopped (a rolling restart).

Row `chaos-<days>d`: `faults_injected`, `faults_survived`, `events_lost` (events the world produced,
counted when each day's file appeared and before any truncation, minus the day's ingested events
plus quarantined rows), `bad_promotions` (a version named champion that fails its own load check
`serving.service.checks.check_version`, was damaged before it was named, or lost its online canary trial),
`service_errors` (5xx answers to the client querying the service throughout), `days_completed`,
and what else was seen (client requests and connection failures, the probes' 5xx, runs that
failed for an error, runs re-executed). A probe started right after the only champion a surface
ever had was damaged has nothing to serve for that surface until the nightly run repairs it:
its 503s are reported (`probe_5xx`), not counted as the service's errors.
One row per fault says when and where it struck and whether it was survived, by its own criteria
(`_judge_*`). These are counts, not timings: a shared machine changes how long the run takes, not
the counts. Faults do not overlap: one is injected at a time (the truncation strikes whenever its
day's file appears), none in the 30 s after the live process (re)started.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.results import print_table, write_results
from devstack.processes import start_process_group, stop_process_group, tail
from devstack.service import call, start_cli_service
from storage.paths import REPO_ROOT

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


class Chaos:
    """The parent: S3, the live child, the service and its client, the faults, the verdicts."""

    def __init__(self, args: argparse.Namespace, var: Path, env: dict[str, str], s3) -> None:
        self.args, self.var, self.env, self.s3 = args, var, env, s3
        self.data = var / "live"
        self.world = self.data / "world"
        self.faults = schedule_faults(args.seed, args.days, args.warmup_days, args.faults_per_kind)
        self.surfaces = ["homefeed", "search", "related"]
        self.child: subprocess.Popen | None = None
        self.child_starts = 0
        self.child_started_at = 0.0
        self.child_failure: str | None = None
        self.service: tuple[subprocess.Popen, int] | None = None
        self.services_started = 0
        self.client = Client(self.surfaces, args.users, args.client_rate, args.seed)
        self.day_started: dict[date, float] = {}
        self.produced: dict[date, int] = {}
        self.truncated: dict[date, dict[str, Any]] = {}
        self.corrupted: list[dict[str, Any]] = []
        self.probe_errors = 0
        self._instance = None
        self._registry = None
        self.log_lines: list[str] = []

    # ------------------------------------------------------------------ plumbing
    def say(self, text: str) -> None:
        line = f"[chaos {time.strftime('%H:%M:%S')}] {text}"
        self.log_lines.append(line)
        print(line, flush=True)

    @property
    def instance(self):
        if self._instance is None:
            import dagster as dg

            self._instance = dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])
        return self._instance

    @property
    def registry(self):
        if self._registry is None:
            from serving.registry.store import Registry
            from storage.s3 import make_client

            settings = self.s3.settings()
            self._registry = Registry(settings, make_client(settings, max_attempts=3))
        return self._registry

    def done_days(self) -> list[date]:
        path = self.world / "runner.json"
        try:
            return sorted(date.fromisoformat(d) for d in json.loads(path.read_text())["done"])
        except (OSError, ValueError, KeyError):
            return []

    def current_day(self) -> date:
        done = self.done_days()
        return done[-1] + timedelta(days=1) if done else FIRST

    def start_child(self) -> None:
        remaining = self.args.days - len(self.done_days())
        log = self.var / f"live-{self.child_starts}.log"
        cmd = [
            sys.executable,
            "-m",
            "orchestration.cli",
            "live",
            "--days",
            str(remaining),
            "--warmup-days",
            str(self.args.warmup_days),
            "--external-s3",
        ]
        with open(log, "wb") as out:
            self.child = start_process_group(
                cmd, cwd=REPO_ROOT, env={**self.env, "PYTHONPATH": str(REPO_ROOT)}, log=out, die_with_parent=True
            )
        self.child_starts += 1
        self.child_started_at = time.time()
        self.say(f"pinrec-ops live started (pid {self.child.pid}, {remaining} days, log {log.name})")

    def start_service(self, every_surface_within_s: float = 120.0) -> tuple[subprocess.Popen, int, list[str]]:
        """A new service process with a fresh cache (a new pod), once `/readyz` answers; then up to
        `every_surface_within_s` for `/readyz/{surface}` of every surface (what a rolling restart
        waits for before it moves traffic). Returns (process, port, surfaces still not ready)."""
        self.services_started += 1
        cache = self.var / f"serving-cache-{self.services_started}"
        log = self.var / f"service-{self.services_started}.log"
        proc, port = start_cli_service(
            self.env,
            self.surfaces,
            cache,
            "--feast-data-dir",
            str(self.data / "feast"),
            "--poll-interval",
            "2",
            "--log-level",
            "warning",
            log_path=log,
            ready_timeout=300,
        )

        def missing() -> list[str]:
            out = []
            for surface in self.surfaces:
                try:
                    if call("127.0.0.1", port, "GET", f"/readyz/{surface}", timeout=10)[0] != 200:
                        out.append(surface)
                except OSError:
                    out.append(surface)
            return out

        deadline = time.monotonic() + every_surface_within_s
        while missing() and time.monotonic() < deadline:
            time.sleep(1.0)
        return proc, port, missing()

    def runs_of(self, day: date) -> list:
        import dagster as dg

        return list(self.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": day.isoformat()})))

    def steps_in_progress(self, day: date) -> list[tuple[str, str]]:
        import dagster as dg

        out = []
        for run in self.runs_of(day):
            if run.status != dg.DagsterRunStatus.STARTED:
                continue
            started, ended = set(), set()
            for record in self.instance.all_logs(
                run.run_id,
                of_type={
                    dg.DagsterEventType.STEP_START,
                    dg.DagsterEventType.STEP_SUCCESS,
                    dg.DagsterEventType.STEP_FAILURE,
                    dg.DagsterEventType.STEP_SKIPPED,
                },
            ):
                event = record.dagster_event
                (started if event.event_type == dg.DagsterEventType.STEP_START else ended).add(event.step_key)
            out += [(run.run_id, step) for step in sorted(started - ended)]
        return out

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        began = time.monotonic()
        self.client.start()
        self.start_child()
        watching = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(watching,), name="chaos-world-watcher", daemon=True)
        watcher.start()
        try:
            self._loop(began)
        finally:
            watching.set()
            watcher.join(timeout=60)
        self.watch_world_files()
        for fault in self.faults:
            if fault.injected_at is None:
                fault.reason = "not injected: the run ended before its moment"
        time.sleep(6)  # the service's next polls pick up the last pointers

    def _watch(self, stop: threading.Event) -> None:
        """The world's files, watched apart from the main loop (which blocks while it starts a
        service or keeps S3 down), so that a truncation strikes right after the world wrote."""
        while not stop.wait(0.05):
            try:
                self.watch_world_files()
            except Exception as exc:  # noqa: BLE001 - a file replaced while read: look again
                self.say(f"world watcher: {type(exc).__name__}: {exc}")

    def _loop(self, began: float) -> None:
        while True:
            now = time.time()
            day = self.current_day()
            self.day_started.setdefault(day, now)
            if self.service is None and self.champions_everywhere():
                proc, port, missing = self.start_service()
                self.service = (proc, port)
                self.client.port = port
                self.say(
                    f"retrieval service ready on port {port}; the client queries it"
                    + (f" (surfaces not ready: {missing})" if missing else "")
                )
            for fault in self.faults:  # a damaged object: a new service once the system had its day
                if (
                    fault.kind == "corrupt_object"
                    and fault.injected_at
                    and "probe_after_day" not in fault.detail
                    and fault.day < day
                ):
                    fault.detail["probe_after_day"] = self.probe(fault.detail["surface"])
                    self.say(f"corrupt_object: a new service after day {fault.day}: {fault.detail['probe_after_day']}")
            for fault in self.faults:  # the earliest armed fault whose moment has come strikes
                if fault.injected_at is not None or fault.kind == "truncate_source" or fault.day > day:
                    continue
                if now - self.child_started_at < CHILD_SETTLE_S:
                    break  # one fault at a time: not while the live process is starting again
                if fault.day < day:
                    fault.day = day  # its moment never came on its day: it strikes on this one
                    self.day_started.setdefault(day, now)
                if self.inject(fault, now):
                    break
            code = self.child.poll() if self.child else None
            if code is not None:
                if len(self.done_days()) >= self.args.days:
                    self.say(f"pinrec-ops live finished all {self.args.days} days")
                    break
                self.child_failure = (
                    f"pinrec-ops live exited with {code} after {len(self.done_days())} days; "
                    f"last lines:\n{tail(self.var / f'live-{self.child_starts - 1}.log')}"
                )
                self.say(self.child_failure)
                break
            if time.monotonic() - began > self.args.max_hours * 3600:
                self.child_failure = f"stopped after {self.args.max_hours} h"
                stop_process_group(self.child)
                break
            time.sleep(0.25)

    def champions_everywhere(self) -> bool:
        if not self.s3.running:
            return False
        try:
            return all(self.registry.champion(s) for s in self.surfaces)
        except Exception:  # noqa: BLE001 - S3 hiccup: ask again later
            return False

    def watch_world_files(self) -> None:
        """Count each day's events when its file appears (before anything damages it); the
        truncation fault strikes then, right after the world wrote the file."""
        import pyarrow.parquet as pq

        for folder in sorted(self.world.glob("date=*")):
            day = date.fromisoformat(folder.name.removeprefix("date="))
            path = folder / "events.parquet"
            if day in self.produced or not path.exists():
                continue
            data = path.read_bytes()
            self.produced[day] = pq.read_metadata(pa_buffer(data)).num_rows
            fault = next(
                (f for f in self.faults if f.kind == "truncate_source" and f.day <= day and f.injected_at is None), None
            )
            if fault is not None:
                keep = int(len(data) * fault.params["fraction"])
                with open(path, "r+b") as fh:
                    fh.truncate(keep)
                fault.injected_at, fault.day = time.time(), day
                self.truncated[day] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "rows": self.produced[day],
                    "size": len(data),
                    "kept": keep,
                    "mtime_ns": path.stat().st_mtime_ns,
                }
                fault.detail = {
                    "file": f"world/date={day}/events.parquet",
                    "bytes": len(data),
                    "kept": keep,
                    "rows": self.produced[day],
                }
                self.say(f"truncate_source: world/date={day}/events.parquet cut from {len(data)} to {keep} bytes")

    # ------------------------------------------------------------------ injections
    def inject(self, fault: Fault, now: float) -> bool:
        """Strike when the fault's moment has come; True once injected."""
        day_start = self.day_started[fault.day]
        if fault.kind == "service_restart":
            if self.service is None:
                return False
            steps = [
                (r, s)
                for r, s in self.steps_in_progress(fault.day)
                if s.endswith(("canary_trial", "champion", "canary_release"))
            ]
            if not steps:
                return False
            fault.detail = {"run": steps[0][0][:8], "step": steps[0][1]}
            self.restart_service(fault)
            return True
        if fault.kind == "kill_run":  # a seeded delay after the day's nightly run began, then mid-step
            if not any(r.job_name == "nightly_refresh" for r in self.runs_of(fault.day)):
                return False
            fault.params.setdefault("nightly_seen_at", now)
            if now < fault.params["nightly_seen_at"] + fault.delay_s:
                return False
            return self.kill(fault)
        if now < day_start + fault.delay_s:
            return False
        if fault.kind == "s3_outage":
            fault.injected_at = time.time()
            self.s3.stop()
            self.say(f"s3_outage: S3 stopped for {self.args.outage_s:g} s")
            time.sleep(self.args.outage_s)
            self.s3.start()
            fault.detail = {"down_s": round(time.time() - fault.injected_at, 1), "endpoint_kept": True}
            self.say(f"s3_outage: S3 back after {fault.detail['down_s']} s")
            return True
        if fault.kind == "corrupt_object":
            return self.corrupt(fault)
        raise ValueError(fault.kind)

    def kill(self, fault: Fault) -> bool:
        steps = self.steps_in_progress(fault.day)
        if not steps:
            return False
        run_id, step = steps[0]
        fault.injected_at = time.time()
        os.killpg(self.child.pid, signal.SIGKILL)
        self.child.wait(timeout=60)
        fault.detail = {"run_id": run_id, "step": step}
        self.say(f"kill_run: pinrec-ops live SIGKILLed during step {step} of run {run_id[:8]}")
        self.start_child()
        return True

    def restart_service(self, fault: Fault) -> None:
        fault.injected_at = time.time()
        old = self.service
        self.say(f"service_restart: during {fault.detail['step']}, starting a new service process")
        try:
            proc, port, missing = self.start_service()
        except RuntimeError as exc:
            fault.detail["error"] = str(exc)[:300]
            self.say(f"service_restart: the new service did not get ready: {exc}")
            return
        if missing:
            fault.detail["surfaces_not_ready"] = missing
        self.service = (proc, port)
        self.client.port = port
        stop_process_group(old[0])
        fault.detail["ready_s"] = round(time.time() - fault.injected_at, 1)
        self.say(f"service_restart: the new service is ready after {fault.detail['ready_s']} s; the old one stopped")

    def corrupt(self, fault: Fault) -> bool:
        from serving.service.checks import check_version
        from storage.s3 import get_bytes, put_bytes

        surface = self.surfaces[int(fault.params["pick"] * len(self.surfaces))]
        canary, pointer = self.registry.canary(surface), self.registry.read_pointer(surface, "champion")
        role, version = ("canary", canary[0]) if canary else ("champion", pointer["version"])
        key = self.registry.version_key(surface, version, fault.params["file"])
        data = bytearray(get_bytes(self.registry.client, self.registry.bucket, key))
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])  # same size, other bytes
        fault.injected_at = time.time()
        put_bytes(self.registry.client, self.registry.bucket, key, bytes(data))
        self.corrupted.append({"surface": surface, "version": version, "role": role, "at": fault.injected_at})
        fault.detail = {
            "surface": surface,
            "role": role,
            "version": version,
            "file": fault.params["file"],
            "earlier_champions": len(pointer.get("previous", [])),
        }
        self.say(f"corrupt_object: {surface}/{version}/{fault.params['file']} ({role}) overwritten in S3")
        try:
            check_version(self.registry, surface, version)
            fault.detail["damage_seen_by_check"] = False
        except Exception as exc:  # noqa: BLE001 - the check must refuse it
            fault.detail["damage_seen_by_check"] = type(exc).__name__
        fault.detail["probe"] = self.probe(surface)
        return True

    def probe(self, surface: str) -> dict[str, Any]:
        """A new service process (empty cache) started after the damage: ready, answers, serves what."""
        try:
            proc, port, _ = self.start_service(every_surface_within_s=15.0)
        except RuntimeError as exc:
            return {"ready": False, "error": str(exc)[:300]}
        try:
            statuses = []
            for user in range(5):
                status, _, _ = call(
                    "127.0.0.1",
                    port,
                    "POST",
                    "/v1/retrieve",
                    {"user_id": user, "surface": surface, "k": 20},
                    timeout=30,
                )
                statuses.append(status)
            self.probe_errors += sum(1 for s in statuses if s >= 500)
            _, versions, _ = call("127.0.0.1", port, "GET", "/versions", timeout=30)
            served = (versions.get("versions", {}).get(surface) or {}).get("champion")
            return {
                "ready": True,
                "statuses": statuses,
                "serving": served,
                "fallback": bool(versions.get("fallbacks", {}).get(surface)),
            }
        finally:
            stop_process_group(proc)

    # ------------------------------------------------------------------ verdicts
    def judge(self) -> None:
        last_done = self.done_days()[-1] if self.done_days() else None
        for fault in self.faults:
            if fault.injected_at is None:
                fault.survived = False
                continue
            problems = []
            if last_done is None or last_done < fault.day:
                problems.append(f"day {fault.day} never completed")
            later = sorted(f.injected_at for f in self.faults if f.injected_at and f.injected_at > fault.injected_at)
            errors = self.client.errors_between(fault.injected_at, later[0] if later else time.time())
            if errors:
                problems.append(f"{errors} client errors (5xx or no answer) before the next fault")
            problems += getattr(self, f"_judge_{fault.kind}")(fault)
            fault.survived, fault.reason = not problems, "; ".join(problems)

    def _judge_s3_outage(self, fault: Fault) -> list[str]:
        return [] if self.s3.running else ["S3 did not come back"]

    def _judge_kill_run(self, fault: Fault) -> list[str]:
        import dagster as dg

        run = self.instance.get_run_by_id(fault.detail["run_id"])
        problems = []
        if run.status != dg.DagsterRunStatus.FAILURE:
            problems.append(f"the killed run is left {run.status.value}")
        for pool in ("training", "feast_online_store"):
            info = self.instance.event_log_storage.get_concurrency_info(pool)
            if fault.detail["run_id"] in {s.run_id for s in info.claimed_slots}:
                problems.append(f"the killed run still holds a {pool} slot")
        return problems

    def _judge_corrupt_object(self, fault: Fault) -> list[str]:
        problems = []
        if not fault.detail.get("damage_seen_by_check"):
            problems.append("the load check did not see the damage")
        probe = fault.detail.get("probe", {})
        nothing_else = fault.detail["role"] == "champion" and not fault.detail["earlier_champions"]
        if not probe.get("ready") or (any(s != 200 for s in probe.get("statuses", [])) and not nothing_else):
            problems.append(f"a new service right after the damage did not serve: {probe}")
        later = fault.detail.get("probe_after_day", {})
        if not later.get("ready") or any(s != 200 for s in later.get("statuses", [])):
            problems.append(f"a new service after the day's runs did not serve: {later or 'never started'}")
        if fault.detail["role"] != "champion" and fault.detail["version"] in self.champion_history(
            fault.detail["surface"]
        ):
            problems.append("the damaged canary was promoted")
        return problems

    def _judge_truncate_source(self, fault: Fault) -> list[str]:
        day = fault.day
        path = self.world / f"date={day}" / "events.parquet"
        info = self.truncated[day]
        problems = []
        fault.detail["refetched"] = hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
        lake = self.lake_rows(day)
        if lake != info["rows"]:
            problems.append(f"{info['rows']} events produced, {lake} ingested or quarantined")
        return problems

    def _judge_service_restart(self, fault: Fault) -> list[str]:
        if "error" in fault.detail:
            return [f"the new service did not get ready: {fault.detail['error']}"]
        if fault.detail.get("surfaces_not_ready"):
            return [f"the new service never got ready for {fault.detail['surfaces_not_ready']}"]
        return []

    def champion_history(self, surface: str) -> list[str]:
        pointer = self.registry.read_pointer(surface, "champion") or {}
        return [pointer["version"], *pointer.get("previous", [])] if pointer else []

    def lake_rows(self, day: date) -> int:
        from events.table import EventTable

        table = EventTable(self.data / "lake")
        if day not in table.days():
            return 0
        return len(table.read_day(day)) + len(table.read_quarantine(day))

    def bad_promotions(self) -> tuple[int, list[str]]:
        """Versions ever named champion that fail their load check (unless this benchmark damaged
        them while they were champion), were damaged before they were named, or lost their
        online canary trial."""
        import dagster as dg

        from serving.service.checks import check_version

        lost = set()
        for run in self.instance.get_runs():
            for record in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
                evaluation = record.dagster_event.event_specific_data
                canary = (evaluation.metadata or {}).get("canary")
                if evaluation.check_name == "online_canary_gate" and not evaluation.passed and canary:
                    lost.add((evaluation.asset_key.path[0], str(canary.value)))
        bad = []
        for surface in self.surfaces:
            damaged_as_champion = {
                c["version"] for c in self.corrupted if c["surface"] == surface and c["role"] == "champion"
            }
            damaged_before = {
                c["version"] for c in self.corrupted if c["surface"] == surface and c["role"] != "champion"
            }
            for version in dict.fromkeys(self.champion_history(surface)):
                if version in damaged_before:
                    bad.append(f"{surface}/{version}: named champion after it was damaged")
                elif (surface, version) in lost:
                    bad.append(f"{surface}/{version}: champion after losing its canary trial")
                elif version not in damaged_as_champion:
                    try:
                        check_version(self.registry, surface, version)
                    except Exception as exc:  # noqa: BLE001
                        bad.append(f"{surface}/{version}: fails its load check ({type(exc).__name__}: {exc})")
        return len(bad), bad

    def promotions_and_trials(self) -> tuple[int, int, int]:
        """(versions named champion by the loop, canary trials judged, trials lost), from the
        Dagster instance: the denominators of bad_promotions."""
        import dagster as dg

        promoted, trials = set(), {}
        for run in self.instance.get_runs():
            for record in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
                m = record.dagster_event.event_specific_data.materialization
                key, md = m.asset_key, m.metadata
                if key.path[-1] == "champion" and md.get("changed") and md["changed"].value == 1:
                    promoted.add((key.path[0], str(md["champion"].value)))
                if key.path[-1] == "canary_release" and str(md["action"].value).startswith("promoted"):
                    promoted.add((key.path[0], str(md["version"].value)))
            for record in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
                e = record.dagster_event.event_specific_data
                canary = (e.metadata or {}).get("canary")
                if e.check_name == "online_canary_gate" and canary and str(canary.value) != "none":
                    trials[(e.asset_key.path[0], str(canary.value))] = e.passed  # the last verdict counts
        return len(promoted), len(trials), sum(1 for passed in trials.values() if not passed)

    def service_matches_pointers(self) -> list[str]:
        if self.service is None:
            return ["no service ran"]
        _, versions, _ = call("127.0.0.1", self.service[1], "GET", "/versions", timeout=30)
        out = []
        for surface in self.surfaces:
            serving = (versions.get("versions", {}).get(surface) or {}).get("champion")
            wanted = self.registry.champion(surface)
            damaged = any(c["version"] == wanted and c["surface"] == surface for c in self.corrupted)
            if serving != wanted and not damaged:
                out.append(f"{surface}: serves {serving}, the pointer names {wanted}")
        return out

    def results(self) -> tuple[list[dict], dict[str, str], str]:
        from orchestration.live import failed_for_an_error

        self.judge()
        done = self.done_days()
        for day in done:
            if day not in self.produced:  # never seen by the watcher (the run ended first): count it now
                import pyarrow.parquet as pq

                self.produced[day] = pq.read_metadata(self.world / f"date={day}" / "events.parquet").num_rows
        lost = sum(self.produced[d] - self.lake_rows(d) for d in self.produced)
        bad, bad_list = self.bad_promotions()
        promotions, trials, trials_lost = self.promotions_and_trials()
        mismatched = self.service_matches_pointers()
        runs = self.instance.get_runs()
        failed = failed_for_an_error(self.instance, [r.run_id for r in runs])
        retried = sum(1 for r in runs if "pinrec/attempt" in r.tags)
        service_errors = sum(n for status, n in self.client.statuses.items() if status >= 500)
        row = {
            "name": f"chaos-{self.args.days}d",
            "faults_injected": sum(1 for f in self.faults if f.injected_at is not None),
            "faults_survived": sum(1 for f in self.faults if f.survived),
            "events_lost": int(lost),
            "bad_promotions": bad,
            "service_errors": service_errors,
            "days_completed": len(done),
            "promotions": promotions,
            "canary_trials": trials,
            "canary_trials_lost": trials_lost,
            "client_requests": sum(self.client.statuses.values()),
            "client_failures": len(self.client.failures),
            "runs": len(runs),
            "runs_failed_for_an_error": len(failed),
            "runs_reexecuted": retried,
            "live_restarts": self.child_starts - 1,
            "service_processes": self.services_started,
            "service_stale_surfaces": len(mismatched),
            "probe_5xx": self.probe_errors,
            "events_produced": int(sum(self.produced.values())),
        }
        rows = [row]
        for i, fault in enumerate(self.faults, 1):
            rows.append(
                {
                    "name": f"fault-{i}-{fault.kind}",
                    "day": (fault.day - FIRST).days + 1,
                    "delay_s": fault.delay_s,
                    "injected": int(fault.injected_at is not None),
                    "survived": int(bool(fault.survived)),
                }
            )
        details = {
            "faults": [
                {
                    "kind": f.kind,
                    "day": f.day.isoformat(),
                    "delay_s": f.delay_s,
                    "detail": f.detail,
                    "survived": f.survived,
                    "reason": f.reason,
                }
                for f in self.faults
            ],
            "bad_promotions": bad_list,
            "service_vs_pointers": mismatched,
            "client_statuses": self.client.statuses,
            "client_failures": self.client.failures[:20],
            "server_errors": self.client.server_errors[:20],
            "child_failure": self.child_failure,
            "failed_runs": failed,
        }
        return rows, details, "\n".join(self.log_lines)

    def close(self) -> None:
        self.client.stop_event.set()
        self.client.join(timeout=60)
        if self.service is not None:
            stop_process_group(self.service[0])
        if self.child is not None and self.child.poll() is None:
            stop_process_group(self.child)
        if self._instance is not None:
            self._instance.dispose()


def pa_buffer(data: bytes):
    import pyarrow as pa

    return pa.BufferReader(data)


def _environment(args, var: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PINREC_", "AWS_", "DAGSTER_"))}
    return {
        **base,
        "PINREC_SOURCE": "simulated",
        "PINREC_SIM_CLOSED_LOOP": "1",
        "PINREC_ONLINE_CANARY": "1",
        "PINREC_VAR_DIR": str(var),
        "PINREC_DATA_DIR": str(var / "live"),
        "DAGSTER_HOME": str(var / "dagster_home"),
        "PINREC_SIM_USERS": str(args.users),
        "PINREC_SIM_ITEMS": str(args.items),
        "PINREC_SIM_EVENTS_PER_DAY": str(args.events),
        "PINREC_SIM_DAYS": "366",
        "PINREC_TRAIN_PRETRAIN_EPOCHS": str(args.pretrain_epochs),
        "PINREC_TRAIN_FINETUNE_EPOCHS": str(args.finetune_epochs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--warmup-days", type=int, default=3)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--events", type=int, default=40_000, help="events per day")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--faults-per-kind", type=int, default=2)
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--client-rate", type=float, default=5.0, help="client requests per second")
    parser.add_argument("--max-hours", type=float, default=6.0)
    parser.add_argument("--keep", type=Path, help="copy the run's folder (logs, instance, world) here")
    parser.add_argument("--context", default="", help="what else ran on the machine (for the notes)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pinrec-chaos-") as tmp:
        var = Path(tmp)
        from devstack.seaweedfs import SeaweedFS

        s3 = SeaweedFS(var / "seaweedfs").start()
        env = {**_environment(args, var), **s3.env()}
        chaos = Chaos(args, var, env, s3)
        for fault in chaos.faults:
            print(f"scheduled: {fault.kind} on day {(fault.day - FIRST).days + 1} at +{fault.delay_s:g} s", flush=True)
        try:
            chaos.run()
            rows, details, log = chaos.results()
        finally:
            chaos.close()
            if args.keep:
                shutil.copytree(
                    var, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("seaweedfs", "serving-cache-*")
                )
            s3.stop()
    seconds = time.monotonic() - t0
    rows[0]["seconds"] = round(seconds, 1)
    print_table(rows)
    print(json.dumps(details, indent=1, default=str))
    if not args.no_write:
        n = len(chaos.faults)
        name = rows[0]["name"]
        targets = {
            f"{name}/events_lost": 0,
            f"{name}/bad_promotions": 0,
            f"{name}/service_errors": 0,
            f"{name}/faults_injected": n,
            f"{name}/faults_survived": n,
            f"{name}/days_completed": args.days,
        }
        notes = (
            f"{args.days} simulated days ({args.warmup_days} warm-up), world {args.users} users, {args.items} "
            f"items, {args.events} events/day, {args.pretrain_epochs}/{args.finetune_epochs} pretraining/"
            f"fine-tuning epochs; seed {args.seed}, {args.faults_per_kind} fault(s) of each of the {len(KINDS)} "
            f"kinds, S3 outage {args.outage_s:g} s, client {args.client_rate:g} requests/s; {seconds:.0f} s in "
            f"all. Faults: "
            + "; ".join(
                f"{f['kind']} day {(date.fromisoformat(f['day']) - FIRST).days + 1} "
                f"{json.dumps(f['detail'], default=str)} -> "
                f"{'survived' if f['survived'] else 'NOT survived: ' + f['reason']}"
                for f in details["faults"]
            )
            + f". Counts, not timings: a shared machine changes the run's duration, not these counts. {args.context}"
        )
        write_results(
            "chaos", rows, targets, notes=notes, lower_is_better={"events_lost", "bad_promotions", "service_errors"}
        )
    return 0 if all(f.survived for f in chaos.faults) else 1


if __name__ == "__main__":
    raise SystemExit(main())
