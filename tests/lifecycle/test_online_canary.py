"""The online canary stage and drift on online figures, on a real registry (SeaweedFS): a canary
whose users engage less than the champion's is rolled back (its trial ends, champion unchanged,
the gate says why), one that wins is promoted; a trial without the information for its decision
goes on another day (the canary keeps serving, a newer candidate is held back) and decides with
the days together; a day without a canary has nothing to decide; the
drift sensor's online signal fires once when the champion's engagement per served impression
drops against its trailing mean, and not on ordinary days."""

import json
import uuid
from datetime import date, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.lifecycle.online_canary import (
    canary_trial_asset,
    online_canary_gate_check,
    online_champion_asset,
)
from assets.partitions import daily_partitions
from assets.resources import DataLakeResource, S3Resource
from assets.state import lifecycle_state
from events.serving_log import ServingLogTable, conform_serving_log
from orchestration.defs import drift_sensor
from serving.registry.publish import publish_model
from tests.helpers import tiny_model

SURFACE = "homefeed"
DAY = date(2026, 1, 10)
PARTITIONS = daily_partitions(date(2026, 1, 1))


@pytest.fixture
def world(tmp_path, s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3 = S3Resource(endpoint_url=s3_server.endpoint_url, bucket=s3_server.bucket, prefix=f"oc-{uuid.uuid4().hex[:8]}")
    lake = DataLakeResource(root=str(tmp_path / "lake"))
    registry = s3.registry()
    champion, _ = publish_model(registry, SURFACE, tiny_model(seed=0), data_partitions=["2026-01-08"])
    canary, _ = publish_model(registry, SURFACE, tiny_model(seed=1), data_partitions=["2026-01-08"])
    registry.promote(SURFACE, champion)
    registry.set_canary(SURFACE, canary, 0.25)
    lifecycle_state(lake).write(
        {"version": canary, "action": f"canary for {DAY}", "released_for": DAY.isoformat()},
        "release",
        SURFACE,
        DAY - timedelta(days=1),
    )
    return {"s3": s3, "lake": lake, "registry": registry, "champion": champion, "canary": canary}


def _serving_log(lake, canary_version, champion_rate, canary_rate, users=150, seed=0, day=DAY):
    rng = np.random.default_rng(seed)
    rows = []
    for role, version, rate, offset in (
        ("champion", "champ", champion_rate, 0),
        ("canary", canary_version, canary_rate, users),
    ):
        for u in range(offset, offset + users):
            for p in range(20):
                rows.append(
                    {
                        "user_id": u,
                        "session_id": u,
                        "ts": pd.Timestamp(day, tz="UTC"),
                        "surface": SURFACE,
                        "position": p,
                        "item_id": p,
                        "version": version,
                        "arm": "pinrec",
                        "served_by": role,
                        "examined": True,
                        "outcome": "click" if rng.random() < rate else "impression",
                    }
                )
    ServingLogTable(lake.root).write_day(day, conform_serving_log(pd.DataFrame(rows)))


def _trial(world, tags: dict | None = None, day=DAY):
    assets = [
        canary_trial_asset(SURFACE, PARTITIONS),
        online_champion_asset(SURFACE, PARTITIONS),
        online_canary_gate_check(SURFACE),
    ]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets,
            partition_key=day.isoformat(),
            instance=instance,
            raise_on_error=False,
            resources={"lake": world["lake"], "s3": world["s3"]},
            selection=[dg.AssetKey([SURFACE, "canary_trial"]), dg.AssetKey([SURFACE, "champion"])],
        )
        if tags is not None:
            tags.update(instance.get_run_by_id(result.run_id).tags)
        return result


def test_a_losing_canary_is_rolled_back_and_the_champion_kept(world):
    """A verdict, not an error: the run is SUCCESS, the check failed with WARN severity, the
    champion step promoted nothing, and the run's tags say so."""
    _serving_log(world["lake"], world["canary"], champion_rate=0.10, canary_rate=0.04)
    tags = {}
    result = _trial(world, tags)
    [gate] = result.get_asset_check_evaluations()
    assert not gate.passed and "significantly worse" in gate.description and "rolled back" in gate.description
    assert gate.metadata["ci95_high"].value < 0 and gate.metadata["canary_users"].value == 150
    assert result.success and gate.severity == dg.AssetCheckSeverity.WARN
    assert gate.metadata["verdict"].value.startswith("not promoted: the canary is significantly worse")
    assert gate.metadata["decision"].value == "roll back" and gate.metadata["trial_day"].value == 1
    assert (
        tags["pinrec/verdict"] == "not promoted" and tags[f"pinrec/verdict/{SURFACE}"] == gate.metadata["verdict"].value
    )
    assert f"{SURFACE}/champion" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }
    assert world["registry"].champion(SURFACE) == world["champion"]
    assert world["registry"].canary(SURFACE) is None  # the trial is over: the canary no longer serves


def test_a_winning_canary_is_promoted(world):
    _serving_log(world["lake"], world["canary"], champion_rate=0.08, canary_rate=0.12, users=400)
    result = _trial(world)
    [gate] = result.get_asset_check_evaluations()
    assert gate.passed and gate.metadata["difference"].value > 0 and gate.metadata["decision"].value == "promote"
    assert result.success
    assert world["registry"].champion(SURFACE) == world["canary"]
    assert world["registry"].canary(SURFACE) is None


def test_a_canary_damaged_in_s3_loses_its_trial_and_is_never_promoted(world):
    """The soak's corrupted object: the canary's weights in S3 no longer match its manifest after
    its release. Its users engaged more, but the trial checks that it still loads: it loses (a
    verdict, not an error of the run), the champion stays, and its trial ends."""
    from serving.registry.manifest import MODEL_FILE
    from storage.s3 import put_bytes

    registry = world["registry"]
    put_bytes(
        registry.client, registry.bucket, registry.version_key(SURFACE, world["canary"], MODEL_FILE), b"damaged weights"
    )
    _serving_log(world["lake"], world["canary"], champion_rate=0.08, canary_rate=0.12)
    result = _trial(world)
    [gate] = result.get_asset_check_evaluations()
    assert not gate.passed and f"the canary {world['canary']} does not load" in gate.description
    assert result.success
    assert registry.champion(SURFACE) == world["champion"]
    assert registry.canary(SURFACE) is None


def test_a_canary_that_served_nobody_goes_on_without_failing_the_run(world):
    """A released canary that served no user on its first day (the services had not loaded it):
    the trial's figures are plain numbers (no numpy scalar reaches Dagster's metadata, which
    failed the run before), and too few users is not a verdict: the trial goes on."""
    _serving_log(world["lake"], world["canary"], champion_rate=0.1, canary_rate=0.1, users=150)
    log = ServingLogTable(world["lake"].root).read_day(DAY)
    ServingLogTable(world["lake"].root).write_day(DAY, log[log["served_by"] == "champion"])
    result = _trial(world)
    assert not any(
        e.event_type_value == "STEP_FAILURE" and "SerializationError" in str(e.step_failure_data.error)
        for e in result.all_events
    )
    [gate] = result.get_asset_check_evaluations()
    assert gate.passed and gate.metadata["decision"].value == "continue"
    assert "too few users to judge (0 canary" in gate.description
    assert world["registry"].champion(SURFACE) == world["champion"]
    assert world["registry"].canary(SURFACE) == (world["canary"], 0.25)


def test_a_trial_without_enough_information_goes_on_and_decides_with_its_days_together(world):
    """Day 1: an equal canary on 150 users a side is too noisy to decide (the run is SUCCESS, the
    canary keeps serving, the champion stays, the day's line says the trial continues, and a newer
    candidate is held back); day 2 adds the same users' second day and the trial promotes it."""
    from assets.lifecycle.online_canary import canary_release_asset

    registry, state = world["registry"], lifecycle_state(world["lake"])
    _serving_log(world["lake"], world["canary"], champion_rate=0.1, canary_rate=0.1)
    tags = {}
    result = _trial(world, tags)
    [gate] = result.get_asset_check_evaluations()
    assert result.success and gate.passed and gate.metadata["decision"].value == "continue"
    assert gate.metadata["log_ratio_se"].value > gate.metadata["target_se"].value
    assert tags[f"pinrec/verdict/{SURFACE}"].startswith("trial continues: its standard error")
    assert "pinrec/verdict" not in tags  # not a refusal
    assert registry.champion(SURFACE) == world["champion"] and registry.canary(SURFACE) == (world["canary"], 0.25)

    newer, _ = publish_model(registry, SURFACE, tiny_model(seed=2), data_partitions=["2026-01-09"])
    state.write({"version": newer}, "candidate", SURFACE, DAY)
    state.write({"candidate": newer, "passed": True, "unloadable": {}}, "canary", SURFACE, DAY)
    with dg.instance_for_test() as instance:
        release = dg.materialize(
            [canary_release_asset(SURFACE, PARTITIONS, traffic=0.25)],
            partition_key=DAY.isoformat(),
            instance=instance,
            resources={"lake": world["lake"], "s3": world["s3"]},
        )
    assert release.success and not release.get_asset_materialization_events()
    assert registry.canary(SURFACE) == (world["canary"], 0.25)  # held back: one canary at a time

    day2 = DAY + timedelta(days=1)
    _serving_log(world["lake"], world["canary"], champion_rate=0.1, canary_rate=0.1, seed=1, day=day2)
    result = _trial(world, day=day2)
    [gate] = result.get_asset_check_evaluations()
    assert gate.metadata["trial_day"].value == 2 and gate.metadata["trial_started"].value == DAY.isoformat()
    assert gate.metadata["decision"].value == "promote", gate.description
    assert registry.champion(SURFACE) == world["canary"] and registry.canary(SURFACE) is None


@pytest.mark.parametrize("history", ["none", "earlier champion"])
def test_a_release_over_a_champion_that_does_not_load_restores_a_loadable_one(world, history):
    """canary_evaluation found the champion damaged beyond repair: the release rolls back to the
    newest earlier champion that loads (and the candidate becomes the canary), or, with none,
    makes the candidate the champion, so the pointer never stays on a version nobody can load."""
    from assets.lifecycle.online_canary import canary_release_asset
    from serving.registry.manifest import MODEL_FILE
    from storage.s3 import put_bytes

    registry, state, lake = world["registry"], lifecycle_state(world["lake"]), world["lake"]
    registry.clear_canary(SURFACE)
    broken = world["champion"]
    if history == "earlier champion":
        registry.promote(SURFACE, world["canary"])  # the fixture's champion is now the earlier one
        broken = world["canary"]
    put_bytes(registry.client, registry.bucket, registry.version_key(SURFACE, broken, MODEL_FILE), b"damaged")
    candidate, _ = publish_model(registry, SURFACE, tiny_model(seed=2), data_partitions=["2026-01-09"])
    state.write({"version": candidate}, "candidate", SURFACE, DAY)
    state.write(
        {"candidate": candidate, "passed": True, "unloadable": {"champion": f"{broken} is damaged"}},
        "canary",
        SURFACE,
        DAY,
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [canary_release_asset(SURFACE, PARTITIONS, traffic=0.25)],
            partition_key=DAY.isoformat(),
            instance=instance,
            resources={"lake": lake, "s3": world["s3"]},
        )
    assert result.success
    if history == "none":
        assert registry.champion(SURFACE) == candidate and registry.canary(SURFACE) is None
        assert state.read("release", SURFACE, DAY)["action"].startswith("promoted (the champion")
    else:
        assert registry.champion(SURFACE) == world["champion"]
        assert registry.canary(SURFACE) == (candidate, 0.25)
        assert f"rolled back to {world['champion']}" in state.read("release", SURFACE, DAY)["action"]


def test_a_day_without_a_canary_has_nothing_to_promote(world):
    lifecycle_state(world["lake"]).path("release", SURFACE, DAY - timedelta(days=1)).unlink()
    world["registry"].clear_canary(SURFACE)
    _serving_log(world["lake"], "none", champion_rate=0.1, canary_rate=0.1)
    result = _trial(world)
    [gate] = result.get_asset_check_evaluations()
    assert gate.passed and "nothing to promote" in gate.description
    assert result.success and world["registry"].champion(SURFACE) == world["champion"]


def _events(day, n=400, seed=0):
    """A day of homefeed events with a steady outcome mix (the outcome-mix signal stays quiet)."""
    rng = np.random.default_rng(seed + day.toordinal())
    outcomes = rng.choice(["impression", "click", "save", "hide"], size=n, p=[0.7, 0.15, 0.1, 0.05])
    return pd.DataFrame(
        {
            "user_id": np.arange(n) % 50,
            "item_id": np.arange(n),
            "surface": SURFACE,
            "outcome": outcomes,
            "event_ts": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
            "session_id": np.arange(n) // 10,
            "query_id": pd.array([pd.NA] * n, dtype="Int64"),
        }
    )


def _champion_online_figures(state, day, clicks_per_1k: float, ci95: float) -> None:
    """The day's online metrics of the champion on SURFACE: 5,000 served impressions, clicks per
    1,000 with a 95% half-width over users of `ci95`, no saves."""
    path = state.path("online_metrics", "_all", day)
    path.parent.mkdir(parents=True, exist_ok=True)
    champion = {
        "impressions": 5000.0,
        "clicks_per_1k": clicks_per_1k,
        "saves_per_1k": 0.0,
        "ci95_clicks_per_1k": ci95,
        "ci95_saves_per_1k": 0.0,
    }
    path.write_text(json.dumps({"by_served_by": {SURFACE: {"champion": champion}}}))


@pytest.mark.parametrize("ci95, fires", [(2.0, True), (12.0, False)], ids=["significant", "within-noise"])
def test_drift_sensor_fires_once_on_a_drop_of_the_champions_online_engagement(world, ci95, fires):
    """A 30% drop fires when the day's figures are precise (a 95% half-width of 2 per 1,000), and
    not when they are as noisy as a few hundred users make them (12 per 1,000: under 3 SE)."""
    from events.ingest import validate_events

    lake, s3 = world["lake"], world["s3"]
    state, table = lifecycle_state(lake), lake.table()
    reference = date(2026, 1, 8)  # the champion's training window (its manifest's data partitions)
    for day in (reference,):
        table.write_day(day, validate_events(_events(day), day).good, validate_events(_events(day), day).quarantine)
    days = [DAY + timedelta(days=i) for i in range(6)]
    rates = [50.0, 51.0, 49.0, 50.5, 48.0, 35.0]  # the users' interests shift on the last day
    fired, cursor = [], {}
    for day, rate in zip(days, rates):
        result = validate_events(_events(day), day)
        table.write_day(day, result.good, result.quarantine)
        _champion_online_figures(state, day, rate, ci95)
        request, cursor, figures = drift_sensor.evaluate_drift(lake, s3, cursor)
        assert figures[SURFACE]["js"] < drift_sensor.JS_THRESHOLD  # the outcome mix did not move
        if request is not None:
            fired.append((day, request))
    if not fires:
        assert fired == [] and figures[SURFACE]["online_engaged_per_1k_drop"] > drift_sensor.ONLINE_DROP_THRESHOLD
        return
    assert [day for day, _ in fired] == [days[-1]]
    request = fired[0][1]
    assert request.partition_key == days[-1].isoformat() and "online_engagement" in request.tags["pinrec/reason"]
    assert json.loads(request.tags["pinrec/drift_figures"])[SURFACE]["online_engaged_per_1k_drop"] > 0.25
    assert cursor["shifts"] == {SURFACE: days[-1].isoformat()}  # the shift start, remembered
    # one shift, one request: the next day, still drifted, is judged against the shift's own days
    nxt = days[-1] + timedelta(days=1)
    table.write_day(nxt, validate_events(_events(nxt), nxt).good, validate_events(_events(nxt), nxt).quarantine)
    _champion_online_figures(state, nxt, 30.0, 2.0)
    again, _, _ = drift_sensor.evaluate_drift(lake, s3, cursor)
    assert again is None


def test_a_promotion_is_not_read_as_a_drop_of_the_champions_recall(world):
    """The recall@100 of a new champion is another model's level, and so is its promotion day (it
    served that day as a canary): judged against those days, a promotion read as a drift. Only
    the days today's champion served as champion are its reference; a drop of its own still fires."""
    from assets.records import CanaryRecord
    from events.ingest import validate_events

    lake, s3 = world["lake"], world["s3"]
    state, table = lifecycle_state(lake), lake.table()
    reference = date(2026, 1, 8)  # the champion's training window (its manifest's data partitions)
    checked = validate_events(_events(reference), reference)
    table.write_day(reference, checked.good, checked.quarantine)
    days = [DAY + timedelta(days=i) for i in range(10)]
    # (champion judged, its recall@100): a promotion on day 4 (the new version served that day as a
    # canary: its figure is another level), then the new one's own drop on day 9
    judged = [("old", 0.12)] * 4 + [("new", 0.12)] + [("new", 0.04)] * 4 + [("new", 0.01)]
    fired, cursor = [], {}
    for day, (champion, recall) in zip(days, judged):
        result = validate_events(_events(day), day)
        table.write_day(day, result.good, result.quarantine)
        figures = {"recall@100": recall, "recall@100_se": 0.002}
        state.save(CanaryRecord(candidate="c", champion=champion, metrics={"champion": figures}), SURFACE, day)
        request, cursor, figures = drift_sensor.evaluate_drift(lake, s3, cursor)
        if request is not None:
            fired.append(day)
        if day in days[4:8]:  # the promotion's day, then fewer than 3 steady days of the new champion
            assert "recall@100_drop" not in figures[SURFACE], (day, figures)
        if day == days[8]:  # judged against days 5-7 only: no drop
            assert figures[SURFACE]["recall@100_drop"] == 0.0, figures
    assert fired == [days[-1]]
    assert cursor["shifts"] == {SURFACE: days[-1].isoformat()}
