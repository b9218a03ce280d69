"""Tests of the simulated world (`world.simulator`): contract, determinism, count rule, and that
the behaviour PinRec should find (outcome-specific interests, session interests, query topics,
surface differences, drift) is really in the data."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from events.contract import COLUMNS, ENGAGED_OUTCOMES, EVENT_SCHEMA, SURFACES
from world.simulator import QUERIES_PER_TOPIC, SimulatedWorld, SimulatorConfig

START = dt.date(2025, 3, 1)
SMALL = SimulatorConfig(
    seed=7, n_users=300, n_items=1500, n_topics=10, events_per_day=30_000, start_date=START, n_days=5
)


def _with(**changes) -> SimulatorConfig:
    return dataclasses.replace(SMALL, **changes)


@pytest.fixture(scope="module")
def small_world() -> SimulatedWorld:
    return SimulatedWorld(SMALL)


@pytest.fixture(scope="module")
def big_day() -> tuple[SimulatedWorld, pd.DataFrame]:
    """Few users, many events: enough engagements per user to estimate their interests."""
    world = SimulatedWorld(_with(n_users=150, events_per_day=300_000, n_days=1))
    return world, world.day(START)


def _frame_bytes(df: pd.DataFrame) -> bytes:
    return pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1) + 1e-12)


def _user_topic_counts(df: pd.DataFrame, outcome: str, item_topic: np.ndarray, n_users: int) -> np.ndarray:
    rows = df[df["outcome"] == outcome]
    counts = np.zeros((n_users, int(item_topic.max()) + 1))
    np.add.at(counts, (rows["user_id"].to_numpy(), item_topic[rows["item_id"].to_numpy()]), 1)
    return counts


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_topics": 1}, "n_topics"),
        ({"n_items": 5, "n_topics": 10}, "n_items"),
        ({"events_per_day": 0}, "events_per_day"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"n_days": 0}, "n_days"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"drift_kind": "sideways"}, "drift_kind"),
        ({"drift_strength": 1.5}, "drift_strength"),
        ({"drift_strength": float("nan")}, "drift_strength"),
        ({"start_date": "2025-03-01"}, "start_date"),
        ({"drift_day": dt.datetime(2025, 3, 2)}, "drift_day"),
        ({"events_per_day": 2**33}, "2\\*\\*32"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        _with(**changes)


def test_defaults_match_the_design():
    cfg = SimulatorConfig(seed=0)
    assert (cfg.n_users, cfg.n_items, cfg.n_topics, cfg.events_per_day) == (2000, 5000, 20, 50_000)
    assert (cfg.start_date, cfg.n_days, cfg.chunk_size, cfg.drift_day) == (dt.date(2026, 1, 1), 30, 1_000_000, None)


def test_days_and_out_of_range(small_world):
    assert small_world.days() == [START + dt.timedelta(days=i) for i in range(5)]
    with pytest.raises(ValueError, match="outside"):
        small_world.day(START - dt.timedelta(days=1))
    with pytest.raises(ValueError, match="outside"):
        small_world.iter_day(START + dt.timedelta(days=5))


# ---------------------------------------------------------------- determinism


def test_same_config_gives_identical_frames_in_any_day_order():
    cfg = _with(chunk_size=8_000)
    a, b = SimulatedWorld(cfg), SimulatedWorld(cfg)
    days = a.days()
    forward = {d: a.day(d) for d in days}
    backward = {d: b.day(d) for d in reversed(days)}
    for d in days:
        pd.testing.assert_frame_equal(forward[d], backward[d])
        assert _frame_bytes(forward[d]) == _frame_bytes(backward[d])
    # a fresh world asked for one day only gives the same frame
    assert _frame_bytes(SimulatedWorld(cfg).day(days[3])) == _frame_bytes(forward[days[3]])
    # and a different seed gives a different world
    other = SimulatedWorld(_with(chunk_size=8_000, seed=8)).day(days[0])
    assert _frame_bytes(other) != _frame_bytes(forward[days[0]])


# ---------------------------------------------------------------- contract, chunks, ids


def test_chunks_validate_and_follow_the_count_rule():
    cfg = _with(events_per_day=20_000, chunk_size=7_000)
    world = SimulatedWorld(cfg)
    day = START + dt.timedelta(days=1)
    chunks = list(world.iter_day(day))
    assert [len(c) for c in chunks] == [7_000, 7_000, 6_000]
    for chunk in chunks:
        EVENT_SCHEMA.validate(chunk)
        assert tuple(chunk.columns) == COLUMNS
        assert str(chunk["event_ts"].dtype) == "datetime64[us, UTC]"
    full = world.day(day)
    assert len(full) == cfg.events_per_day
    pd.testing.assert_frame_equal(full, pd.concat(chunks, ignore_index=True))
    # sessions never span chunks
    per_chunk = [set(c["session_id"].unique()) for c in chunks]
    assert all(not (per_chunk[i] & per_chunk[j]) for i in range(3) for j in range(i + 1, 3))
    # one chunk when the day fits
    assert [len(c) for c in SimulatedWorld(_with(events_per_day=5_000)).iter_day(START)] == [5_000]


def test_ids_timestamps_and_sessions(small_world):
    frames = [small_world.day(d) for d in small_world.days()[:2]]
    for d, df in zip(small_world.days()[:2], frames):
        day_start = pd.Timestamp(d, tz="UTC")
        assert df["event_ts"].min() >= day_start
        assert df["event_ts"].max() < day_start + pd.Timedelta(days=1)
        assert df["user_id"].between(0, SMALL.n_users - 1).all()
        assert df["item_id"].between(0, SMALL.n_items - 1).all()
        assert ((df["session_id"].to_numpy() >> 32) == d.toordinal()).all()
        sessions = df.groupby("session_id")
        # a session has one user and one surface, and is ordered in time
        assert (sessions["user_id"].nunique() == 1).all()
        assert (sessions["surface"].nunique() == 1).all()
        assert (sessions["event_ts"].apply(lambda s: s.is_monotonic_increasing)).all()
    assert not set(frames[0]["session_id"]) & set(frames[1]["session_id"])


def test_every_engagement_follows_its_impression(small_world):
    df = small_world.day(START)
    engaged = df["outcome"] != "impression"
    idx = np.flatnonzero(engaged.to_numpy())
    assert idx.min() > 0
    eng, prev = df.iloc[idx], df.iloc[idx - 1]
    assert (prev["outcome"].to_numpy() == "impression").all()
    for col in ("user_id", "item_id", "surface", "session_id"):
        assert (eng[col].to_numpy() == prev[col].to_numpy()).all()
    delay = eng["event_ts"].to_numpy() - prev["event_ts"].to_numpy()
    assert (delay >= np.timedelta64(1, "s")).all() and (delay <= np.timedelta64(60, "s")).all()
    assert set(df.loc[engaged, "outcome"]) == {"click", "save", "hide"}


# ---------------------------------------------------------------- behaviour


def test_most_impressions_are_not_engaged(small_world):
    df = small_world.day(START)
    for surface in SURFACES:
        rows = df[df["surface"] == surface]
        impressions = (rows["outcome"] == "impression").sum()
        engagements = rows["outcome"].isin(ENGAGED_OUTCOMES | {"hide"}).sum()
        assert impressions > 0
        assert engagements / impressions < 0.35, surface


def test_surfaces_have_different_engagement_rates(big_day):
    _, df = big_day
    rates = {}
    for surface in SURFACES:
        rows = df[df["surface"] == surface]
        n = (rows["outcome"] == "impression").sum()
        rates[surface] = {o: (rows["outcome"] == o).sum() / n for o in ("click", "save", "hide")}
    assert rates["search"]["click"] > 1.5 * rates["homefeed"]["click"]
    assert rates["search"]["click"] > 1.3 * rates["related"]["click"]
    assert rates["related"]["save"] > 1.3 * rates["homefeed"]["save"]
    assert rates["homefeed"]["hide"] > 2.0 * rates["search"]["hide"]


def test_search_sessions_follow_a_query_topic(big_day):
    world, df = big_day
    search = df["surface"] == "search"
    assert df.loc[search, "query_id"].notna().all()
    assert df.loc[~search, "query_id"].isna().all()
    rows = df[search]
    assert (rows.groupby("session_id")["query_id"].nunique() == 1).all()
    assert rows["query_id"].between(0, SMALL.n_topics * QUERIES_PER_TOPIC - 1).all()
    query_topic = world.query_topic[rows["query_id"].to_numpy(dtype=np.int64)]
    item_topic = world.item_topic[rows["item_id"].to_numpy()]
    assert (query_topic == item_topic).mean() > 0.75
    # far above what a random item would give
    chance = np.bincount(world.item_topic, minlength=SMALL.n_topics).max() / SMALL.n_items
    assert (query_topic == item_topic).mean() > 3 * chance


def test_save_and_click_interests_differ_and_match_the_truth(big_day, tmp_path):
    world, df = big_day
    params = SimulatedWorld.load_parameters(world.save_parameters(tmp_path / "world.json"))
    click_truth = np.array(params["user_click_topic_pref"])
    save_truth = np.array(params["user_save_topic_pref"])
    item_topic = np.array(params["item_topic"])
    n_users = params["config"]["n_users"]
    clicks = _user_topic_counts(df, "click", item_topic, n_users)
    saves = _user_topic_counts(df, "save", item_topic, n_users)
    active = (clicks.sum(axis=1) >= 30) & (saves.sum(axis=1) >= 30)
    assert active.sum() >= 30
    clicks, saves = clicks[active], saves[active]
    click_truth, save_truth = click_truth[active], save_truth[active]
    save_vs_save = _row_corr(saves, save_truth)
    save_vs_click = _row_corr(saves, click_truth)
    click_vs_click = _row_corr(clicks, click_truth)
    click_vs_save = _row_corr(clicks, save_truth)
    # what a user saves follows their save interests, what they click their click interests
    assert np.median(save_vs_save) > 0.6
    assert np.median(click_vs_click) > 0.6
    assert np.median(save_vs_save) > np.median(save_vs_click) + 0.15
    assert np.median(click_vs_click) > np.median(click_vs_save) + 0.2
    assert (save_vs_save > save_vs_click).mean() > 0.7
    # and the two empirical distributions of a user differ measurably: the saves carry the save
    # interests, the clicks do not
    assert np.median(save_vs_save) > np.median(click_vs_save) + 0.3
    assert np.median(click_vs_click) > np.median(save_vs_click) + 0.3


def test_session_interest_differs_from_long_term(big_day):
    """Consecutive clicks of a user share a topic more often inside a session than across."""
    world, df = big_day
    clicks = df[df["outcome"] == "click"].sort_values(["user_id", "event_ts"], kind="stable")
    user = clicks["user_id"].to_numpy()
    session = clicks["session_id"].to_numpy()
    topic = world.item_topic[clicks["item_id"].to_numpy()]
    same_user = user[1:] == user[:-1]
    same_session = same_user & (session[1:] == session[:-1])
    next_session = same_user & (session[1:] != session[:-1])
    match = topic[1:] == topic[:-1]
    assert same_session.sum() > 1000 and next_session.sum() > 1000
    assert match[same_session].mean() > match[next_session].mean() + 0.15


# ---------------------------------------------------------------- drift


def _save_and_hide_rate(df: pd.DataFrame) -> tuple[float, float]:
    n = (df["outcome"] == "impression").sum()
    return (df["outcome"] == "save").sum() / n, (df["outcome"] == "hide").sum() / n


def test_outcome_mix_drift_changes_saves_after_drift_day_only():
    drift_day = START + dt.timedelta(days=2)
    base = SimulatedWorld(_with(events_per_day=60_000))
    drifted = SimulatedWorld(_with(events_per_day=60_000, drift_day=drift_day, drift_strength=0.8))
    before = START + dt.timedelta(days=1)
    # before the drift day the worlds are the same, byte for byte
    assert _frame_bytes(base.day(before)) == _frame_bytes(drifted.day(before))
    assert not drifted.is_drifted(before) and drifted.is_drifted(drift_day)
    save_before, hide_before = _save_and_hide_rate(drifted.day(before))
    save_after, hide_after = _save_and_hide_rate(drifted.day(drift_day))
    save_base, hide_base = _save_and_hide_rate(base.day(drift_day))
    assert save_after < 0.6 * save_before and save_after < 0.6 * save_base
    assert hide_after > 1.8 * hide_before and hide_after > 1.8 * hide_base
    params = drifted.parameters()["drift"]
    assert params["day"] == drift_day.isoformat() and params["kind"] == "outcome_mix"
    for surface in SURFACES:
        assert params["surface_rates_after"][surface]["save"] < drifted.surface_rates()[surface]["save"]
        assert drifted.surface_rates(drift_day)[surface] == params["surface_rates_after"][surface]


def test_interest_shift_drift_moves_interests_to_other_topics():
    drift_day = START + dt.timedelta(days=1)
    cfg = _with(
        n_users=100,
        events_per_day=150_000,
        n_days=2,
        drift_day=drift_day,
        drift_kind="interest_shift",
        drift_strength=1.0,
    )
    world = SimulatedWorld(cfg)
    shift = np.array(world.parameters()["drift"]["topic_shift"])
    assert (shift != np.arange(cfg.n_topics)).all() and sorted(shift) == list(range(cfg.n_topics))
    before = _user_topic_counts(world.day(START), "click", world.item_topic, cfg.n_users)
    after = _user_topic_counts(world.day(drift_day), "click", world.item_topic, cfg.n_users)
    truth = world.preferences()["click"]
    moved = world.preferences(drift_day)["click"]
    np.testing.assert_allclose(moved[:, shift], truth)
    active = (before.sum(axis=1) >= 30) & (after.sum(axis=1) >= 30)
    assert active.sum() >= 20
    assert np.median(_row_corr(before[active], truth[active])) > 0.6
    assert np.median(_row_corr(after[active], moved[active])) > 0.6
    assert np.median(_row_corr(after[active], truth[active])) < 0.3


# ---------------------------------------------------------------- parameters


def test_parameters_round_trip(tmp_path):
    cfg = _with(drift_day=START + dt.timedelta(days=3), drift_kind="interest_shift", drift_strength=0.25)
    world = SimulatedWorld(cfg)
    params = world.parameters()
    json.dumps(params)  # serialisable as is
    path = world.save_parameters(tmp_path / "sub" / "params.json")
    loaded = SimulatedWorld.load_parameters(path)
    assert loaded == params
    assert np.array(loaded["user_click_topic_pref"]).shape == (cfg.n_users, cfg.n_topics)
    assert np.array(loaded["user_save_topic_pref"]).shape == (cfg.n_users, cfg.n_topics)
    assert len(loaded["item_topic"]) == len(loaded["item_popularity"]) == cfg.n_items
    assert set(loaded["surface_rates"]) == set(SURFACES)
    assert np.isclose(sum(loaded["item_popularity"]), 1.0)
    rebuilt = SimulatedWorld.from_parameters(loaded)
    assert rebuilt.config == cfg
    assert _frame_bytes(rebuilt.day(START)) == _frame_bytes(world.day(START))
