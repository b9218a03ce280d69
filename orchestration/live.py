"""The closed loop: `pinrec-ops live` advances the simulated world one day at a time and runs the
system for that day through Dagster's own machinery, then lets the users react.

Per day D:

1. the world plays D (`world.closed_loop.ClosedLoopWorld`): sessions are drawn as in the open
   world, and a share of each session's impressions comes from what the user's experiment arm
   serves at that moment: the `pinrec*` and `aa-*` arms through the retrieval service's own HTTP
   API in process (`/v1/retrieve`: Feast online features materialized the night before plus the
   user's events since, champion or canary by the user's hash, the arm's outcome weights; the
   `unipinrec` arm through `/v1/recommend` of the same service: 200 retrieved, ranked by the
   champion's ranking head), the baselines through their policies (`world.experiments`); the day's events and
   serving log land
   in `{data_dir}/world/date=D/`, where the simulated source reads them (its clock);
2. a run of `nightly_refresh` for D: ingest, features, online store, online metrics, then per
   surface the online trial of yesterday's canary (promotion or rollback), fine-tune, publish,
   offline canary, and the release of the new canary;
3. the drift sensor and the weekly schedule are evaluated with the world's time, through their
   own Dagster definitions; what they request runs as `retrain` runs for D;
4. the baselines refresh on the same log (popularity daily; the SASRec arm retrains with the
   library whenever the system pretrains, and is published to its own registry prefix and
   served by the same serving code).

The first `warmup_days` days are served by nobody (organic impressions only) and ingested only;
on the last warm-up day a `retrain` run creates the first champions. Everything the runner needs
to resume is on disk: the world's days, the Dagster instance, and `world/runner.json` (the drift
sensor's cursor, the days whose runs finished, and which stages of the day in progress finished).

Faults (the `chaos` benchmark injects them into a living run). A day is four stages (`world`,
`nightly`, `models`: the bootstrap retrain or the drift sensor and weekly schedule, `baselines`),
each idempotent and recorded in `runner.json` when it finishes, so a runner that was killed
resumes at the stage it was in. A run that failed for an error (not a gate's verdict: S3 down, a
step that raised) is run again, whole, after `RETRY_WAITS` (its steps are idempotent: re-running
a day rewrites the same bytes); a stage that raises outside Dagster (S3 down while publishing a
baseline or reading manifests for the drift sensor) is retried the same way; after the last
attempt the loop stops with the day unfinished (`DayNotFinished`), to be resumed later. At start
the runner marks failed the runs a killed runner left behind and frees their pool slots
(`orchestration.runs.fail_orphaned_runs`). Before each nightly attempt the day's world files are
checked: an events file that is not readable parquet (truncated, corrupt) is fetched again from
the world by replaying the day from its serving log (`world.closed_loop.replay_day`: the same
bytes), so no event of the day is lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from orchestration import output
from orchestration.runs import code_location, fail_orphaned_runs, run_job
from orchestration.steps import DATA_ASSET_KEYS
from orchestration.verdicts import failed_for_an_error, run_verdict, step_errors
from storage.files import atomic_write_text

STAGES = ("world", "nightly", "models", "baselines")
RETRY_WAITS = (20.0, 60.0, 120.0)  # seconds before the 2nd, 3rd and 4th attempt


@dataclass
class DayReport:
    day: date
    runs: list[tuple[str, bool, str]] = field(default_factory=list)  # (job, success, trigger)
    seconds: dict[str, float] = field(default_factory=dict)
    served_errors: dict[int, int] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)
    retries: list[str] = field(default_factory=list)  # what was attempted again, and why
    repairs: list[str] = field(default_factory=list)  # world files fetched again
    verdicts: list[str] = field(default_factory=list)  # per run: orchestration.verdicts.run_verdict


class DayNotFinished(RuntimeError):
    """A stage of the day still failed after its last attempt; `pinrec-ops live` resumes it."""


class LiveRunner:
    """Plays the closed loop day by day (see the module docstring)."""

    def __init__(
        self,
        *,
        settings,
        instance: dg.DagsterInstance,
        resources: dict,
        loop_config=None,
        arms=None,
        warmup_days: int = 3,
        served_k: int | None = None,
        log: Callable[[str], None] = print,
        retry_waits: Sequence[float] = RETRY_WAITS,
    ) -> None:
        from world.closed_loop import ClosedLoopWorld, LoopConfig
        from world.experiments import EXPERIMENT_ARMS
        from world.simulator import SimulatedWorld

        self.settings, self.instance, self.resources = settings, instance, resources
        self.world_dir = Path(settings.world_dir)
        self.world_dir.mkdir(parents=True, exist_ok=True)
        self.world = SimulatedWorld(resources["event_source"].world())
        self.loop = ClosedLoopWorld(self.world, loop_config or LoopConfig())
        self.arms = list(arms or EXPERIMENT_ARMS)
        self.warmup_days = warmup_days
        self.served_k = served_k or self.loop.loop.served_k
        self.log = log
        self.state_path = self.world_dir / "runner.json"
        self.state = (
            json.loads(self.state_path.read_text())
            if self.state_path.exists()
            else {"done": [], "drift_cursor": None, "sasrec_through": None}
        )
        self.retry_waits = tuple(retry_waits)
        self._services: dict[str, Any] = {}
        self._history = None
        for run_id in fail_orphaned_runs(instance):
            self.log(f"run {run_id} was left unfinished by a process that is gone: marked failed, its pool slots freed")

    # ------------------------------------------------------------------ days
    @property
    def first_day(self) -> date:
        return self.world.config.start_date

    def next_day(self) -> date:
        done = sorted(date.fromisoformat(d) for d in self.state["done"])
        return done[-1] + timedelta(days=1) if done else self.first_day

    def _save_state(self) -> None:
        atomic_write_text(self.state_path, json.dumps(self.state, indent=2, sort_keys=True))

    def play(self, days: int) -> list[DayReport]:
        reports = []
        try:
            for _ in range(days):
                reports.append(self.play_day(self.next_day()))
        finally:
            self.close()
        return reports

    def close(self) -> None:
        """Stop the in-process services (their micro-batchers)."""
        for _, policy in self._services.values():
            policy.close()
        self._services.clear()

    def play_day(self, day: date) -> DayReport:
        """Play `day`: its stages in order, each skipped when it finished before (a resumed day)."""
        report = DayReport(day)
        t0 = time.monotonic()
        progress = self.state.get("progress") or {}
        if progress.get("day") != day.isoformat():
            progress = {"day": day.isoformat(), "stages": [], "retrained": False}
        warm = (day - self.first_day).days < self.warmup_days
        stages = {
            "world": lambda: self._world_stage(day, report),
            "nightly": lambda: self._run(
                report, "nightly_refresh", day, "live", assets=DATA_ASSET_KEYS if warm else None
            ),
            "models": lambda: self._models_stage(day, report, warm),
            "baselines": lambda: self._refresh_baselines(day, report, progress["retrained"]),
        }
        for stage in STAGES:
            if stage in progress["stages"]:
                continue
            began = time.monotonic()
            self._attempts(stage, day, report, stages[stage])
            report.seconds[stage] = time.monotonic() - began
            if stage == "models":
                progress["retrained"] = any(job == "retrain" and ok for job, ok, _ in report.runs)
            progress["stages"] = [s for s in STAGES if s in progress["stages"] or s == stage]
            self.state["progress"] = progress
            self._save_state()
        self.state["done"] = sorted(set(self.state["done"]) | {day.isoformat()})
        self.state["progress"] = None
        self._save_state()
        report.seconds["total"] = time.monotonic() - t0
        self.log(
            f"{day}  "
            + "  ".join(
                f"{job}[{trigger}] {verdict}" for (job, _, trigger), verdict in zip(report.runs, report.verdicts)
            )
            + f"  ({report.seconds.get('world', 0):.0f} s world, {report.seconds['total']:.0f} s in all)"
            + "".join(f"\n    retried: {r}" for r in report.retries)
            + "".join(f"\n    repaired: {r}" for r in report.repairs)
        )
        return report

    def _attempts(self, stage: str, day: date, report: DayReport, fn: Callable[[], None]) -> None:
        """Run a stage; an exception is retried after each of `retry_waits`, then `DayNotFinished`."""
        for attempt in range(len(self.retry_waits) + 1):
            try:
                fn()
                return
            except DayNotFinished:
                raise
            except Exception as exc:  # noqa: BLE001 - S3 down, a process hiccup: the stage is idempotent
                reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                if attempt == len(self.retry_waits):
                    raise DayNotFinished(
                        f"{day}: stage {stage} failed after {attempt + 1} attempts ({reason}); "
                        "run pinrec-ops live again to resume it"
                    ) from exc
                wait = self.retry_waits[attempt]
                report.retries.append(f"stage {stage} after {reason} (waited {wait:.0f} s)")
                self.log(f"{day}  stage {stage} failed ({reason}); attempt {attempt + 2} in {wait:.0f} s")
                time.sleep(wait)

    def _models_stage(self, day: date, report: DayReport, warm: bool) -> None:
        if (day - self.first_day).days == self.warmup_days - 1:
            self._retrain(report, day, "bootstrap")
        elif not warm:
            self._automation(report, day)

    # ------------------------------------------------------------------ the world
    def _world_stage(self, day: date, report: DayReport) -> None:
        if (self.world_dir / f"date={day.isoformat()}" / "events.parquet").exists():
            self._ensure_world_day(day, report)  # played before the runner stopped
        else:
            self._world_day(day, report)

    def _ensure_world_day(self, day: date, report: DayReport) -> None:
        """The day's events file, fetched again from the world when it is not readable parquet:
        the world replays the day from its serving log (`world.closed_loop.replay_day`), which
        gives the same bytes."""
        import pyarrow.parquet as pq

        from world.closed_loop import FatigueHistory, replay_day

        folder = self.world_dir / f"date={day.isoformat()}"
        try:
            pq.read_table(folder / "events.parquet")
            return
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt: whatever pyarrow says
            damage = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        log = pd.read_parquet(folder / "serving_log.parquet")
        table = self.resources["lake"].table()
        before = [d for d in table.days() if d < day]
        history = FatigueHistory.from_events(table.read_until(before[-1])) if before else FatigueHistory()
        again = replay_day(self.loop, day, log, history)
        _write_parquet(again.events, folder / "events.parquet")
        report.repairs.append(
            f"world/date={day}/events.parquet was not readable ({damage}); fetched again from the "
            f"world by replaying its serving log: {len(again.events)} events"
        )
        self.log(f"{day}  {report.repairs[-1]}")

    def _world_day(self, day: date, report: DayReport) -> None:
        from world.closed_loop import FatigueHistory

        if self._history is None:
            self._history = FatigueHistory.from_events(self._lake_events())
        router = self._router(day)
        served_before = dict(self._service_errors())

        def recommend(requests):
            from world.closed_loop import Served as WorldServed
            from world.experiments import Request

            served = router.serve([Request(r.user_id, r.surface, r.k, r.recent_events, r.query_id) for r in requests])
            return [
                WorldServed(
                    items=s.items, version=s.version, arm=s.arm, served_by=s.served_by, propensities=s.propensities
                )
                for s in served
            ]

        result = self.loop.day(day, recommend, self._history)
        folder = self.world_dir / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        # the serving log first: the events file is the day's commit point (the source's clock)
        _write_parquet(result.serving_log, folder / "serving_log.parquet")
        _write_parquet(result.events, folder / "events.parquet")
        self._history.update(result.events)
        after = self._service_errors()
        report.served_errors = {
            k: after.get(k, 0) - served_before.get(k, 0) for k in after if after.get(k, 0) != served_before.get(k, 0)
        }

    def _lake_events(self) -> pd.DataFrame:
        from events.contract import empty_events

        table = self.resources["lake"].table()
        days = table.days()
        return table.read_until(days[-1]) if days else empty_events()

    # ------------------------------------------------------------------ serving
    def _service(self, name: str, prefix: str):
        """The retrieval service over registry `prefix`, in process; pointers re-read each day."""
        if name not in self._services:
            from feature_pipeline.store import open_store
            from serving.service.app import create_app
            from serving.service.checks import checked_registry
            from serving.service.features import FeastFeatures
            from serving.service.versions import VersionManager

            s3 = self.resources["s3"]
            registry = checked_registry(s3.s3_settings().with_prefix(prefix), s3.client())
            manager = VersionManager(
                registry,
                list(self.settings.surfaces),
                Path(self.settings.data_dir) / "live_cache" / name,
                poll_interval_s=3600,
            )
            features = FeastFeatures(open_store(self.resources["feast"].settings()))
            app = create_app(manager, features, start_polling=False)
            from world.experiments import ServicePolicy

            self._services[name] = (manager, ServicePolicy(app=app, name=name))
        manager, policy = self._services[name]
        manager.refresh()
        return policy

    def _service_errors(self) -> dict[int, int]:
        total: dict[int, int] = {}
        for _, policy in self._services.values():
            for status, n in policy.errors.items():
                total[status] = total.get(status, 0) + n
        return total

    def _router(self, day: date):
        from world.experiments import ArmRouter, OraclePolicy, RandomPolicy

        s3 = self.resources["s3"]
        policies = {
            "service": self._service("system", s3.prefix),
            "sasrec": self._service("sasrec", f"{s3.prefix}-baselines/sasrec"),
            "popularity": self._popularity(day),
            # the ceiling: the world's true engagement probabilities, with the users' fatigue at the day's start
            "oracle": OraclePolicy(
                lambda users, surface: self.loop.expected_engagement(users, surface, day, self._history)
            ),
            # the floor: a uniformly random list, its draws seeded by the day
            "random": RandomPolicy(self.world.config.n_items, seed=day.toordinal()),
        }
        return ArmRouter(self.arms, policies)

    def _popularity(self, day: date):
        from world.experiments import PopularityPolicy

        table = self.resources["lake"].table()
        recent = [d for d in table.days() if day - timedelta(days=3) <= d < day]
        events = pd.concat([table.read_day(d) for d in recent], ignore_index=True) if recent else None
        policy = PopularityPolicy()
        return policy.fit(events, label=str(recent[-1])) if events is not None else policy

    # ------------------------------------------------------------------ baselines
    def _refresh_baselines(self, day: date, report: DayReport, retrained: bool) -> None:
        """The SASRec arm retrains (library, all switches off) whenever the system pretrained."""
        if not retrained or self.state.get("sasrec_through") == day.isoformat():
            return
        t0 = time.monotonic()
        from serving.registry.publish import publish_model
        from serving.service.checks import checked_registry
        from training.train import pretrain

        table = self.resources["lake"].table()
        days = [d for d in table.days() if d < day]
        events = table.read_until(days[-1])
        model_cfg, data_cfg, loss_cfg, train_cfg = self.resources["training"].configs()
        from dataclasses import replace

        model_cfg = replace(
            model_cfg,
            outcome_conditioning=False,
            multi_token=False,
            side_inputs=False,
            exposure_bias=False,
            n_queries=0,
        )
        data_cfg = replace(data_cfg, outcome_conditioning=False)
        loss_cfg = replace(loss_cfg, logq=False)
        out = Path(self.settings.data_dir) / "models" / "sasrec" / day.isoformat()
        result = pretrain(events, out, model_cfg, data_cfg, loss_cfg, train_cfg=train_cfg)
        s3 = self.resources["s3"]
        registry = checked_registry(s3.s3_settings().with_prefix(f"{s3.prefix}-baselines/sasrec"), s3.client())
        for surface in self.settings.surfaces:
            version, _ = publish_model(
                registry,
                surface,
                result.model,
                data_partitions=[d.isoformat() for d in days],
                config={"baseline": "sasrec"},
                created_at=datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
            )
            registry.promote(surface, version)
        self.state["sasrec_through"] = day.isoformat()
        report.seconds["sasrec"] = time.monotonic() - t0

    # ------------------------------------------------------------------ Dagster
    def _run(
        self, report: DayReport, job: str, day: date, trigger: str, *, assets=None, tags: dict[str, str] | None = None
    ) -> bool:
        """One run of `job` for `day`; a run that failed for an error (not a gate's verdict) is run
        again after each of `retry_waits` (tagged as a re-execution of the first), then
        `DayNotFinished`. The world's files are checked before each nightly attempt."""
        root = parent = None
        for attempt in range(len(self.retry_waits) + 1):
            if job == "nightly_refresh":
                self._ensure_world_day(day, report)
            lineage = (
                {"dagster/parent_run_id": parent, "dagster/root_run_id": root, "pinrec/attempt": str(attempt + 1)}
                if root
                else {}
            )
            result = run_job(
                job,
                day,
                self.instance,
                settings=self.settings,
                assets=assets,
                resources=self.resources,
                tags={"pinrec/trigger": trigger, **(tags or {}), **lineage},
                run_config=output.run_config(),
            )
            if result.success or not failed_for_an_error(self.instance, [result.run_id]):
                report.runs.append((job, result.success, trigger))
                report.verdicts.append(run_verdict(self.instance, result.run_id))
                return result.success
            root, parent = root or result.run_id, result.run_id
            reason = "; ".join(step_errors(self.instance, result.run_id)) or "the run failed"
            if attempt == len(self.retry_waits):
                report.runs.append((job, False, trigger))
                report.verdicts.append(f"FAILED: {reason.split('; ')[0]}")
                raise DayNotFinished(
                    f"{day}: {job} failed for an error in {attempt + 1} attempts, last run "
                    f"{result.run_id} ({reason[:300]}); run pinrec-ops live again to resume"
                )
            wait = self.retry_waits[attempt]
            report.retries.append(
                f"{job} run {result.run_id[:8]} failed for an error ({reason[:200]}); run again after {wait:.0f} s"
            )
            self.log(f"{day}  {report.retries[-1]}")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _retrain(self, report: DayReport, day: date, trigger: str, tags: dict[str, str] | None = None) -> None:
        self._run(report, "retrain", day, trigger, tags=tags)

    def _automation(self, report: DayReport, day: date) -> None:
        """The drift sensor and the weekly schedule, evaluated at the world's time through their own
        definitions; their run requests become runs of the requested job."""
        defs = code_location(self.settings)
        sensor = defs.resolve_sensor_def("outcome_drift_sensor")
        context = dg.build_sensor_context(
            cursor=self.state.get("drift_cursor"),
            instance=self.instance,
            resources={"lake": self.resources["lake"], "s3": self.resources["s3"]},
            repository_def=defs.get_repository_def(),
        )
        result = sensor.evaluate_tick(context)
        requests = list(result.run_requests or [])
        for request in requests:
            report.drift = json.loads(request.tags.get("pinrec/drift_figures", "{}"))
            self._retrain(
                report,
                date.fromisoformat(request.partition_key),
                "drift",
                {k: v for k, v in request.tags.items() if k != "pinrec/trigger"},
            )
        # the cursor moves once its requests ran: a stage attempted again evaluates the same tick
        self.state["drift_cursor"] = result.cursor
        tomorrow = day + timedelta(days=1)
        if tomorrow.weekday() == 6 and not requests:  # Sunday 04:00: the weekly retrain of Saturday
            schedule = defs.resolve_schedule_def("weekly_retrain_schedule")
            tick = schedule.evaluate_tick(
                dg.build_schedule_context(
                    instance=self.instance,
                    scheduled_execution_time=datetime.combine(tomorrow, datetime.min.time(), tzinfo=UTC)
                    + timedelta(hours=4),
                    resources={"event_source": self.resources["event_source"], "s3": self.resources["s3"]},
                    repository_def=defs.get_repository_def(),
                )
            )
            for request in tick.run_requests or []:
                self._retrain(report, date.fromisoformat(request.partition_key), "weekly_schedule")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from storage.files import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(
            pa.Table.from_pandas(df, preserve_index=False),
            tmp,
            coerce_timestamps="us",
            allow_truncated_timestamps=False,
        )
