"""The chaos soak's verdicts: after the days ran, whether each fault was survived (no bad
promotion, no lost row, the service on the pointers' versions) and the rows of the results
(`Chaos` in benchmarks/chaos.py takes these methods from `ChaosVerdicts`)."""

from __future__ import annotations

import hashlib
import time
from datetime import date

from benchmarks.chaos_faults import FIRST, Fault
from devstack.service import call


class ChaosVerdicts:
    """What the soak concludes; mixed into `Chaos`, whose state it reads."""

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
