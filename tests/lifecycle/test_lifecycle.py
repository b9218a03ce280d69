"""The whole lifecycle in Dagster on a small simulated world, through runs of the named jobs (one
day partition per run): ingest to promotion, a broken candidate blocked by the canary gate,
rollback, an old day's candidate never replacing a newer champion, no fine-tune from a model that
saw its day, the drift sensor firing once, and a three-day backfill whose partitions each carry
their own day's figures and re-run to identical outputs."""

import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import torch

from assets.config import REPO_ROOT, load_settings
from assets.resources import (
    EventSourceResource,
    S3Resource,
    build_resources,
)
from assets.state import LifecycleState
from events.table import file_sha256
from orchestration.report import lifecycle_summary
from orchestration.runs import code_location, materialize_in_process, run_job
from orchestration.steps import DATA_ASSET_KEYS as DATA_KEYS
from orchestration.steps import SURFACE_STEPS
from orchestration.verdicts import run_verdict
from tests.helpers import TINY_MODEL, mechanics_gate

FIRST = date(2026, 1, 1)
DAYS = [FIRST + timedelta(days=i) for i in range(4)]
WORLD = {"sim_users": 120, "sim_items": 400, "sim_events_per_day": 6000}
GRAPH = load_settings()  # the default deployment's graph: its surfaces, its day partitions
SURFACES = GRAPH.surfaces
# The tiny test model does not reliably beat the popularity policy on the yardstick: the tests of
# promotion's mechanics run the gate without that rule, which the check records as a run-config
# override (test_faults.py tests the rule itself, bootstrapping included).
MECHANICS_GATE = mechanics_gate(SURFACES)


def _resources(tmp: Path, s3_server, **world):
    env = {**os.environ, "PINREC_DATA_DIR": str(tmp), "PINREC_SOURCE": "simulated"}
    resources = build_resources(load_settings(env))
    resources["event_source"] = EventSourceResource(**{**resources["event_source"].model_dump(), **WORLD, **world})
    resources["training"] = resources["training"].with_plan(**TINY_MODEL)
    resources["s3"] = S3Resource(
        endpoint_url=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=f"lifecycle-{tmp.name}"
    )
    return resources


def _publish_another(registry, surface: str, workdir: Path) -> str:
    """Publish another loadable version of `surface`'s champion (its item embeddings nudged): a
    version of the same catalogue that a test can promote, judge or damage by itself."""
    from serving.registry.manifest import INDEX_FILE, ITEM_IDS_FILE, MODEL_FILE

    local = registry.fetch(surface, registry.champion(surface), workdir)
    weights = torch.load(local.path(MODEL_FILE), weights_only=True)
    key = next(k for k in weights if "item_emb" in k)
    weights[key] = weights[key] + 1e-3
    torch.save(weights, workdir / "other.pt")
    return registry.publish(
        surface,
        {
            MODEL_FILE: workdir / "other.pt",
            INDEX_FILE: local.path(INDEX_FILE),
            ITEM_IDS_FILE: local.path(ITEM_IDS_FILE),
        },
        index=local.manifest["index"],
        config=local.manifest["config"],
        data_partitions=local.manifest["data_partitions"],
    )


def _run(keys, resources, instance, partition=None, raise_on_error=True):
    return materialize_in_process(
        keys, resources, instance, settings=GRAPH, partition=partition, raise_on_error=raise_on_error
    )


def _ingest(days, resources, instance):
    """One run of nightly_refresh's data assets per day, as the main command and backfills do."""
    for day in days:
        assert run_job("nightly_refresh", day, instance, settings=GRAPH, assets=DATA_KEYS, resources=resources).success


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, s3_env):
    tmp = tmp_path_factory.mktemp("lifecycle")
    resources = _resources(tmp, s3_env)
    with dg.instance_for_test() as instance:
        _ingest(DAYS, resources, instance)
        result = run_job("retrain", DAYS[-1], instance, settings=GRAPH, resources=resources, run_config=MECHANICS_GATE)
        # the canary's verdicts and the summary of this run, before other tests judge other
        # candidates of the day
        state = LifecycleState(tmp / "lifecycle")
        canaries = {surface: state.read("canary", surface, DAYS[-1]) for surface in SURFACES}
        settings = load_settings({**os.environ, "PINREC_DATA_DIR": str(tmp)})
        canaries["summary"] = lifecycle_summary(settings, DAYS[-1], resources["s3"].registry())
        yield tmp, resources, instance, result, canaries


@pytest.fixture(scope="module")
def large_catalogue(tmp_path_factory, s3_env):
    """The lifecycle of `lifecycle` on a world of 2,000 items: the yardstick judges a policy's top
    100, a third of what a user of the 400-item world has not seen, so there a model's top and its
    bottom replay alike; here a list is a twentieth of the catalogue."""
    tmp = tmp_path_factory.mktemp("large_catalogue")
    resources = _resources(tmp, s3_env, sim_items=2000)
    with dg.instance_for_test() as instance:
        _ingest(DAYS, resources, instance)
        result = run_job("retrain", DAYS[-1], instance, settings=GRAPH, resources=resources, run_config=MECHANICS_GATE)
        assert result.success
        yield tmp, resources, instance, result, {}


def test_lifecycle_promotes_a_verified_champion_on_every_surface(lifecycle):
    _, resources, _, result, canaries = lifecycle
    assert result.success
    registry = resources["s3"].registry()
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    summary = canaries["summary"]
    for surface in SURFACES:
        canary = canaries[surface]
        assert registry.champion(surface) == canary["candidate"]
        gate = checks[(f"{surface}/canary_evaluation", "canary_gate")]
        assert gate.passed and gate.metadata["verdict"].value == "passed"
        assert "beat_baselines" in gate.metadata["overridden_by_run_config"].value
        # the yardstick of the candidate and of popularity, on the check and in the summary
        yardstick = gate.metadata["yardstick"].value
        ours, popularity = gate.metadata["yardstick/candidate"].value, gate.metadata["yardstick/popularity"].value
        assert 0.0 <= ours <= 1.0 and 0.0 <= popularity <= 1.0
        entry = summary["surfaces"][surface]
        assert entry["yardstick"]["name"] == yardstick and entry["promoted"]
        assert (entry["yardstick"]["champion"], entry["yardstick"]["popularity"]) == (ours, popularity)
        manifest = registry.manifest(surface, canary["candidate"])
        assert manifest["data_partitions"] == [d.isoformat() for d in DAYS[:-1]]  # the newest day held out
        assert canary["metrics"]["candidate"]["recall@100"] > 0.02
        # the position-corrected replay that ranks policies over many days is reported beside it
        assert canary["metrics"]["candidate"]["replay_position@100"] >= 0.0
        assert canary["baselines"]["popularity"]["replay_position@100_se"] >= 0.0
        assert canary["champion"] is None  # the first candidate bootstraps the champion


def test_lifecycle_runs_are_runs_of_the_named_jobs_one_day_each(lifecycle):
    _, _, instance, result, _ = lifecycle
    assert run_verdict(instance, result.run_id) == f"promoted ({', '.join(sorted(SURFACES))})"
    runs = instance.get_runs()
    assert [(r.job_name, r.tags["dagster/partition"]) for r in reversed(runs)][: len(DAYS) + 1] == [
        ("nightly_refresh", d.isoformat()) for d in DAYS
    ] + [("retrain", DAYS[-1].isoformat())]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "pretrained_model" in materialized and all(f"{s}/champion" in materialized for s in SURFACES)


def test_broken_candidate_is_blocked_and_champion_kept(large_catalogue):
    tmp, resources, instance, _, _ = large_catalogue
    surface = SURFACES[0]
    registry = resources["s3"].registry()
    champion_before = registry.champion(surface)
    # A deliberately broken fine-tune: its item table negated after training, so it ranks what the
    # model expects users to engage with last (a scrambled table scores near chance, which a tiny
    # held-out day cannot always tell from the champion within its sampling error).
    run_dir = Path(LifecycleState(tmp / "lifecycle").read("finetune", surface, DAYS[-1])["path"])
    weights = torch.load(run_dir / "model.pt", weights_only=True)
    key = next(k for k in weights if k.endswith("item_emb.weight") or k.endswith("item_emb.table.weight"))
    weights[key] = -weights[key]
    torch.save(weights, run_dir / "model.pt")
    result = _run(
        [f"{surface}/{s}" for s in SURFACE_STEPS[1:]], resources, instance, partition=DAYS[-1], raise_on_error=False
    )
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "canary_gate"]
    figures = {k: v.value for k, v in check.metadata.items() if k.startswith(("yardstick", "reasons"))}
    assert not check.passed and result.success, figures  # refused: a verdict, the run is not red
    assert any(
        why in check.description
        for why in ("worse than the champion", "below the floor", "does not beat the popularity")
    )
    promoted = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert f"{surface}/champion" not in promoted
    assert registry.champion(surface) == champion_before
    bad = LifecycleState(tmp / "lifecycle").read("candidate", surface, DAYS[-1])["version"]
    assert bad in registry.list_versions(surface) and bad != champion_before  # published, never promoted


def test_rollback_is_one_operator_action(lifecycle, s3_env):
    import subprocess
    import sys

    tmp, resources, _, _, _ = lifecycle
    registry = resources["s3"].registry()
    surface = SURFACES[0]
    champion = registry.champion(surface)
    (tmp / "rollback-test").mkdir(exist_ok=True)
    other = _publish_another(registry, surface, tmp / "rollback-test")
    registry.promote(surface, other)  # a bad promotion by hand ...
    env = {**os.environ, **s3_env.env(), "PINREC_S3_PREFIX": resources["s3"].prefix, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "serving.service.cli", "rollback", surface],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert registry.champion(surface) == champion  # ... undone by one command


def test_backfill_of_an_old_day_never_replaces_a_newer_champion_and_the_gate_says_why(lifecycle):
    tmp, resources, instance, _, _ = lifecycle
    registry = resources["s3"].registry()
    before = {s: registry.champion(s) for s in SURFACES}  # trained through DAYS[-2]
    old_day = DAYS[-2]
    result = run_job(
        "retrain", old_day, instance, settings=GRAPH, resources=resources
    )  # pretrains on the days before it
    assert result.success  # a verdict, not an error
    assert instance.get_run_by_id(result.run_id).tags["pinrec/verdict"] == "not promoted"
    gates = {c.asset_key.path[0]: c for c in result.get_asset_check_evaluations() if c.check_name == "canary_gate"}
    for surface in SURFACES:
        assert not gates[surface].passed
        assert (
            f"the candidate trained on data through {DAYS[-3]}, the champion through {DAYS[-2]}"
            in gates[surface].description
        )
        assert gates[surface].metadata["margin/data_through (days vs champion)"].value == -1
        assert registry.champion(surface) == before[surface]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert not any(k.endswith("/champion") for k in materialized)
    assert f"{SURFACES[0]}/candidate_version" in materialized  # computed for that day, never promoted
    # the day's line: the verdict and the first reason, read back from the instance
    verdict = run_verdict(instance, result.run_id)
    # (the first reason: a reason may itself hold "; ", so it is read from the check's list)
    assert verdict in {f"not promoted: {s}: {gates[s].metadata['reasons'].value[0]}" for s in SURFACES}, verdict


def test_fine_tuning_refuses_a_pretrained_model_that_saw_its_day(lifecycle):
    _, resources, instance, _, _ = lifecycle
    # every pretrained model so far trained through DAYS[-3] or later: none saw only days before DAYS[1]
    result = run_job(
        "nightly_refresh",
        DAYS[1],
        instance,
        settings=GRAPH,
        resources=resources,
        assets=[f"{SURFACES[0]}/finetuned_model"],
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"no pretrained model trained only on days before {DAYS[1]}" in failure.step_failure_data.error.message


def test_a_version_damaged_in_s3_is_a_verdict_of_the_canary_not_an_error_of_the_run(lifecycle):
    """The soak's corrupted object: a champion whose object in S3 no longer matches its manifest is
    put back from this machine's verified copy; without one it is unloadable (the candidate is
    judged on the floors alone, the gate says so); a damaged candidate fails the gate naming it.
    None of them fails the run for an error, so a retry is never needed."""
    from orchestration.live import failed_for_an_error
    from serving.registry.manifest import INDEX_FILE, MODEL_FILE
    from storage.s3 import get_bytes, put_bytes

    tmp, resources, instance, _, _ = lifecycle
    surface, day = SURFACES[-1], DAYS[-1]
    registry, state = resources["s3"].registry(), LifecycleState(tmp / "lifecycle")
    champion = registry.champion(surface)
    (tmp / "damage-test").mkdir(exist_ok=True)
    candidate = _publish_another(registry, surface, tmp / "damage-test")  # another loadable candidate
    saved = state.read("candidate", surface, day)
    state.write({**saved, "version": candidate}, "candidate", surface, day)
    champion_index = registry.version_key(surface, champion, INDEX_FILE)
    good_index = get_bytes(registry.client, registry.bucket, champion_index)
    damaged = good_index[:-16] + bytes(16)
    try:
        # this machine holds a verified copy of the champion: the damaged object is put back
        put_bytes(registry.client, registry.bucket, champion_index, damaged)
        result = _run([f"{surface}/canary_evaluation"], resources, instance, partition=day, raise_on_error=False)
        # the gate's verdict on this candidate may go either way (latency is judged too): no error
        assert failed_for_an_error(instance, [result.run_id]) == []
        assert get_bytes(registry.client, registry.bucket, champion_index) == good_index
        [evaluation] = result.get_asset_materialization_events()
        assert evaluation.materialization.metadata["champion_repaired"].value == [INDEX_FILE]
        assert set(state.read("canary", surface, day)["metrics"]) == {"candidate", "champion"}

        # no intact copy at hand: the champion is unloadable and the candidate judged on the floors
        put_bytes(registry.client, registry.bucket, champion_index, damaged)
        for cache in (tmp / "version_cache" / surface).glob("*"):
            shutil.rmtree(cache)  # what a fresh machine would fetch: the damaged object
        result = _run([f"{surface}/canary_evaluation"], resources, instance, partition=day, raise_on_error=False)
        assert failed_for_an_error(instance, [result.run_id]) == []
        canary = state.read("canary", surface, day)
        assert "champion" in canary["unloadable"] and "no intact copy" in canary["unloadable"]["champion"]
        assert set(canary["metrics"]) == {"candidate"} and canary["champion"] is None
        [gate] = result.get_asset_check_evaluations()
        rules = {record.data["rule"] for record in gate.metadata["rules"].records}
        assert "not worse than champion" not in rules  # nothing to compare with
        if gate.passed:
            assert "the champion does not load" in gate.description

        model_key = registry.version_key(surface, candidate, MODEL_FILE)
        put_bytes(registry.client, registry.bucket, model_key, b"not the weights the manifest names")
        for cache in (tmp / "version_cache" / surface).glob("*"):
            shutil.rmtree(cache)
        result = _run([f"{surface}/canary_evaluation"], resources, instance, partition=day, raise_on_error=False)
        assert failed_for_an_error(instance, [result.run_id]) == []
        [gate] = result.get_asset_check_evaluations()
        assert not gate.passed and gate.description.startswith("the candidate does not load")
    finally:
        put_bytes(registry.client, registry.bucket, champion_index, good_index)
        state.write(saved, "candidate", surface, day)
    assert registry.champion(surface) == champion


def test_drift_sensor_fires_once_after_injected_drift(tmp_path, s3_env):
    drift_day = DAYS[-1] + timedelta(days=1)
    resources = _resources(tmp_path, s3_env, sim_drift_day=drift_day.isoformat(), sim_drift_kind="outcome_mix")
    resources["event_source"] = EventSourceResource(
        **{**resources["event_source"].model_dump(), "sim_events_per_day": 20_000}
    )
    sensor_resources = {"lake": resources["lake"], "s3": resources["s3"]}
    sensor = code_location(GRAPH).resolve_sensor_def("outcome_drift_sensor")
    with dg.instance_for_test() as instance:
        _ingest(DAYS, resources, instance)
        assert run_job(
            "retrain", DAYS[-1], instance, settings=GRAPH, resources=resources, run_config=MECHANICS_GATE
        ).success
        cursor = None
        fired = []
        for day in [DAYS[-1], drift_day, drift_day + timedelta(days=1), drift_day + timedelta(days=2)]:
            if day != DAYS[-1]:
                _ingest([day], resources, instance)
            context = dg.build_sensor_context(cursor=cursor, resources=sensor_resources, instance=instance)
            result = sensor(context)
            if isinstance(result, dg.SensorResult):
                cursor = result.cursor
                fired += [(day, r) for r in result.run_requests]
        assert [day for day, _ in fired] == [drift_day]
        request = fired[0][1]
        assert request.partition_key == drift_day.isoformat()
        assert request.tags["pinrec/trigger"] == "drift" and "outcome_mix" in request.tags["pinrec/reason"]
        figures = json.loads(request.tags["pinrec/drift_figures"])
        assert figures and all(f["drifted"] for f in figures.values())


def test_three_day_backfill_gives_each_partition_its_own_figures_and_reruns_identically(tmp_path, s3_env):
    from events.table import EventTable

    resources = _resources(tmp_path, s3_env)
    window = DAYS[:3]

    def snapshot():
        files = sorted(p for p in tmp_path.rglob("*.parquet"))
        return {p.relative_to(tmp_path): file_sha256(p) for p in files}

    with dg.instance_for_test() as instance:
        _ingest(window, resources, instance)
        first = snapshot()
        table = EventTable(tmp_path / "lake")
        for day in window:  # each partition's metadata is that day's own figures
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("events"), asset_partitions=[day.isoformat()]), limit=1
            ).records
            meta = record.asset_materialization.metadata
            assert meta["rows_good"].value == table.row_count(table.events_path(day)) > 0
            assert meta["dagster/row_count"].value == meta["rows_good"].value
        counts = [table.row_count(table.events_path(d)) for d in window]
        assert len(set(counts)) > 1 or len({file_sha256(table.events_path(d)) for d in window}) == 3
        materialized = instance.get_materialized_partitions(dg.AssetKey("events"))
        assert materialized == {d.isoformat() for d in window}  # exactly what was computed
        _ingest(window, resources, instance)
        assert snapshot() == first
    assert sum(1 for p in first if "events" in p.parts) == 3
