"""The closed loop end to end (`pinrec-ops live`, a small world, four days: two warm-up days, a
bootstrap retrain, two days served): every day is a run of nightly_refresh through Dagster; what
the champion serves on a day appears as that day's impressions of those users; users get their
experiment arm and the canary share by their hashes; replaying a day with what was served gives
the same events byte for byte."""

import dagster as dg
import pandas as pd
import pytest

from events.table import EventTable
from orchestration.live import failed_for_an_error
from serving.service.versions import canary_fraction
from tests.helpers import LIVE_DAYS, LIVE_WORLD
from world.closed_loop import ClosedLoopWorld, FatigueHistory, LoopConfig, replay_day
from world.experiments import EXPERIMENT_ARMS, assign_arm
from world.simulator import SimulatedWorld

pytestmark = pytest.mark.services  # starts processes of its own

DAYS = LIVE_DAYS
SYSTEM_ARMS = {a.name for a in EXPERIMENT_ARMS if a.policy == "service"}


@pytest.fixture(scope="module")
def loop(live_loop):
    return live_loop  # tests/conftest.py: one run of pinrec-ops live per session


def _day_files(loop, day):
    folder = loop["world"] / f"date={day.isoformat()}"
    return pd.read_parquet(folder / "events.parquet"), pd.read_parquet(folder / "serving_log.parquet")


def test_every_day_is_a_run_of_nightly_refresh_and_the_first_champions_come_from_a_retrain(loop):
    with dg.DagsterInstance.from_config(str(loop["tmp"] / "dagster_home")) as instance:
        runs = list(reversed(instance.get_runs()))
        jobs = [(r.job_name, r.tags["dagster/partition"], r.tags["pinrec/trigger"]) for r in runs]
        assert [j for j in jobs if j[0] == "nightly_refresh"] == [
            ("nightly_refresh", d.isoformat(), "live") for d in DAYS
        ]
        assert ("retrain", DAYS[1].isoformat(), "bootstrap") in jobs
        assert failed_for_an_error(instance, [r.run_id for r in runs]) == []  # only gate verdicts may fail a run


def test_what_the_champion_serves_becomes_that_days_impressions(loop):
    events, log = _day_files(loop, DAYS[2])  # the first day served by the bootstrap champions
    system = log[log["arm"].isin(SYSTEM_ARMS) & (log["served_by"] == "champion")]
    assert len(system) > 1000, system["surface"].value_counts().to_dict()
    promoted = pd.read_json(
        loop["data"] / "lifecycle" / "homefeed" / DAYS[1].isoformat() / "release.json", typ="series"
    )
    assert set(system.loc[system["surface"] == "homefeed", "version"]) == {promoted["version"]}
    impressions = events[events["outcome"] == "impression"]
    keys = ["user_id", "session_id", "item_id", "surface"]
    joined = system.merge(impressions, on=keys, how="left", indicator=True, suffixes=("", "_event"))
    assert (joined["_merge"] == "both").all()
    assert (pd.to_datetime(joined["ts"], utc=True) == pd.to_datetime(joined["event_ts"], utc=True)).any()
    # what users did with it is in the log and in the events: every engaged served slot has its row
    engaged = system[system["outcome"] != "impression"]
    assert len(engaged) and engaged.merge(events, on=keys + ["outcome"]).shape[0] >= len(engaged)


def test_users_get_their_arm_and_the_canary_share_by_their_hashes(loop):
    for day in DAYS[2:]:
        _, log = _day_files(loop, day)
        assert (log["arm"] == log["user_id"].map(lambda u: assign_arm(u, EXPERIMENT_ARMS).name)).all()
        system = log[log["arm"].isin(SYSTEM_ARMS)]
        canary = system[system["served_by"] == "canary"]
        fractions = system.apply(lambda r: canary_fraction(r["surface"], r["user_id"]), axis=1)
        assert (fractions[system["served_by"] == "canary"] < 0.25).all()
        if len(canary):  # a canary served this surface: exactly its users' share of the hash
            for surface in set(canary["surface"]):
                rows = system["surface"] == surface
                assert ((fractions[rows] < 0.25) == (system.loc[rows, "served_by"] == "canary")).all()
    baselines = _day_files(loop, DAYS[2])[1]
    assert {"popularity", "oracle"} <= set(baselines["arm"])


def test_replaying_a_day_with_what_was_served_gives_the_same_events(loop):
    from assets.config import EMBEDDED_WORLD

    events, log = _day_files(loop, DAYS[3])
    from dataclasses import replace

    config = replace(
        EMBEDDED_WORLD,
        n_users=int(LIVE_WORLD["PINREC_SIM_USERS"]),
        n_items=int(LIVE_WORLD["PINREC_SIM_ITEMS"]),
        events_per_day=int(LIVE_WORLD["PINREC_SIM_EVENTS_PER_DAY"]),
        n_days=366,
    )
    world = ClosedLoopWorld(SimulatedWorld(config), LoopConfig())
    lake = EventTable(loop["data"] / "lake")
    history = FatigueHistory.from_events(lake.read_until(DAYS[2]))
    again = replay_day(world, DAYS[3], log, history)  # what the live runner re-fetches a damaged day with
    pd.testing.assert_frame_equal(again.events.reset_index(drop=True), events.reset_index(drop=True), check_dtype=False)
    assert len(again.serving_log) == len(log)
