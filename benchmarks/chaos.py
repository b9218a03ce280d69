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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.chaos_faults import CHILD_SETTLE_S, FIRST, KINDS, Client, Fault, schedule_faults
from benchmarks.chaos_verdicts import ChaosVerdicts
from benchmarks.results import argument_parser, print_table, write_results
from devstack.processes import start_process_group, stop_process_group, tail
from devstack.service import call, start_cli_service
from storage.paths import REPO_ROOT


class Chaos(ChaosVerdicts):
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
    parser = argument_parser(__file__, __doc__)
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
