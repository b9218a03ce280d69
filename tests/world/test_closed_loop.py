"""Tests of the closed-loop world (`world.closed_loop`): served lists become impressions at the
served positions, users react with position bias and fatigue, requests see only the past, and a
day re-run with the same served lists is byte-identical."""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib

import numpy as np
import pandas as pd
import pytest

from events.contract import EVENT_SCHEMA, SURFACES
from tests.helpers import SMALL_WORLD
from world.closed_loop import (
    SERVING_LOG_COLUMNS,
    ClosedLoopWorld,
    FatigueHistory,
    LoopConfig,
    Served,
    SessionRequest,
    replay_day,
)
from world.simulator import SimulatedWorld

NO_FATIGUE = {"fatigue_scale": float("inf"), "engaged_again_factor": 1.0}
# more sessions per day than SMALL_WORLD, for the behavioural rates
BUSY_WORLD = dataclasses.replace(SMALL_WORLD, events_per_day=20_000, n_days=2)


def _frame_bytes(df: pd.DataFrame) -> bytes:
    return pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()


def _shuffled(n_items: int, arm: str = "test"):
    """A deterministic recommender: a pseudo-random list per request, a function of the request
    (user, session, time and what it saw), so a re-run with the same inputs serves the same."""

    def recommend(requests: list[SessionRequest]) -> list[Served]:
        out = []
        for r in requests:
            seen = r.recent_events["item_id"].to_numpy()
            seed = zlib.crc32(f"{r.user_id}/{r.session_id}/{r.ts.isoformat()}/{seen.tolist()}".encode())
            items = np.random.default_rng(seed).permutation(n_items)[: r.k]
            out.append(Served(items=items.tolist(), version="v7", arm=arm, served_by="champion"))
        return out

    return recommend


def _run(world: SimulatedWorld, loop: LoopConfig, recommend, days=None):
    closed = ClosedLoopWorld(world, loop)
    history = FatigueHistory()
    results = []
    for day in days or world.days():
        result = closed.day(day, recommend, history)
        history.update(result.events)
        results.append(result)
    return results, history


# ---------------------------------------------------------------- config and answers


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"served_share": 1.5}, "served_share"),
        ({"served_share": float("nan")}, "served_share"),
        ({"served_k": 0}, "served_k"),
        ({"served_k": 2.0}, "served_k"),
        ({"position_eta": -0.1}, "position_eta"),
        ({"fatigue_scale": 0.0}, "fatigue_scale"),
        ({"fatigue_half_life_days": -1.0}, "fatigue_half_life_days"),
        ({"engaged_again_factor": 1.2}, "engaged_again_factor"),
        ({"batch_minutes": 0}, "batch_minutes"),
        ({"served_share": True}, "served_share"),
    ],
)
def test_loop_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**changes)


def test_recommender_answers_are_checked():
    world = SimulatedWorld(SMALL_WORLD)
    closed = ClosedLoopWorld(world)
    day = world.days()[0]
    with pytest.raises(ValueError, match="one Served per request"):
        closed.day(day, lambda requests: [])
    with pytest.raises(ValueError, match=r"lie in \[0, 300\)"):
        closed.day(day, lambda requests: [Served([5, 300], "v", "a", "champion") for _ in requests])
    with pytest.raises(ValueError, match="list of int"):
        closed.day(day, lambda requests: [Served([1.5], "v", "a", "champion") for _ in requests])


# ---------------------------------------------------------------- determinism, rows, contract


def test_rerun_with_the_same_served_lists_is_byte_identical():
    world = SimulatedWorld(SMALL_WORLD)
    recommend = _shuffled(SMALL_WORLD.n_items)
    first, history = _run(world, LoopConfig(), recommend, world.days()[:3])
    again, history_again = _run(SimulatedWorld(SMALL_WORLD), LoopConfig(), recommend, world.days()[:3])
    for a, b in zip(first, again):
        assert _frame_bytes(a.events) == _frame_bytes(b.events)
        assert _frame_bytes(a.serving_log) == _frame_bytes(b.serving_log)
        assert a.requests == b.requests > 0
    # a history rebuilt from the event table equals the one kept day by day
    rebuilt = FatigueHistory.from_events(pd.concat([r.events for r in first], ignore_index=True))
    assert rebuilt.equals(history) and history.equals(history_again)
    # re-running the last day from the longer history (cut before it) gives the same day
    rerun = ClosedLoopWorld(world).day(world.days()[2], recommend, history.before(world.days()[2]))
    assert _frame_bytes(rerun.events) == _frame_bytes(first[2].events)
    with pytest.raises(ValueError, match="not before"):
        ClosedLoopWorld(world).day(world.days()[2], recommend, history)
    with pytest.raises(ValueError, match="not after"):
        history.update(first[0].events)
    # and different served lists give a different day
    other = ClosedLoopWorld(world).day(world.days()[0], _shuffled(SMALL_WORLD.n_items - 1))
    assert _frame_bytes(other.events) != _frame_bytes(first[0].events)


def test_a_day_replayed_from_its_serving_log_gives_the_same_events():
    """What the live runner does when a day's events file is damaged: the world plays the day
    again with what its serving log says was served, and the events come out byte-identical."""
    world = SimulatedWorld(dataclasses.replace(SMALL_WORLD, n_days=2))
    closed = ClosedLoopWorld(world)
    day1, day2 = world.days()
    history = FatigueHistory()
    first = closed.day(day1, _shuffled(SMALL_WORLD.n_items))
    history.update(first.events)
    played = closed.day(day2, _shuffled(SMALL_WORLD.n_items), history)
    assert len(played.serving_log) > 100

    again = replay_day(ClosedLoopWorld(SimulatedWorld(world.config)), day2, played.serving_log, history.before(day2))
    assert _frame_bytes(again.events) == _frame_bytes(played.events)
    with pytest.raises(ValueError, match="does not replay to itself"):  # another day's log
        replay_day(closed, day2, first.serving_log, history.before(day2))


def test_days_follow_the_contract_and_keep_the_open_loop_impressions():
    world = SimulatedWorld(SMALL_WORLD)
    day = world.days()[1]
    result = ClosedLoopWorld(world).day(day, _shuffled(SMALL_WORLD.n_items))
    events, open_loop = result.events, world.day(day)
    EVENT_SCHEMA.validate(events)
    impressions = events[events["outcome"] == "impression"]
    open_impressions = open_loop[open_loop["outcome"] == "impression"]
    # the same sessions and positions: the open loop's impression rows, items aside
    for col in ("user_id", "surface", "session_id", "query_id"):
        pd.testing.assert_series_equal(
            impressions[col].reset_index(drop=True), open_impressions[col].reset_index(drop=True)
        )
    assert (impressions["event_ts"].dt.date == day).all()
    assert (events["event_ts"].dt.date == day).all()
    # every engagement row follows its impression
    engaged = np.flatnonzero(events["outcome"].to_numpy() != "impression")
    prev = events.iloc[engaged - 1]
    assert (prev["outcome"] == "impression").all()
    for col in ("user_id", "item_id", "session_id"):
        assert (events.iloc[engaged][col].to_numpy() == prev[col].to_numpy()).all()
    log = result.serving_log
    assert tuple(log.columns) == SERVING_LOG_COLUMNS
    assert str(log["ts"].dtype) == "datetime64[us, UTC]" and log["examined"].dtype == bool


def test_without_served_slots_or_fatigue_the_day_is_the_open_loop_day():
    """The closed loop draws its sessions as the open-loop world does: with nothing served and
    no fatigue, users see and do exactly what they do in the open loop (only start times move)."""
    world = SimulatedWorld(dataclasses.replace(SMALL_WORLD, chunk_size=700))
    day = world.days()[2]

    def never(requests):
        raise AssertionError("no session has a served slot")

    result = ClosedLoopWorld(world, LoopConfig(served_share=0.0, **NO_FATIGUE)).day(day, never)
    assert result.requests == 0 and len(result.serving_log) == 0
    cols = ["user_id", "item_id", "surface", "outcome", "session_id"]
    closed, open_loop = result.events[cols], world.day(day)[cols]
    # the open loop cuts each chunk at its row budget, possibly between an impression and its
    # engagement; the closed loop keeps that engagement
    assert 0 <= len(closed) - len(open_loop) <= 4
    pd.testing.assert_frame_equal(closed.iloc[: len(open_loop)].reset_index(drop=True), open_loop)


# ---------------------------------------------------------------- served lists


def test_served_lists_become_the_first_impressions_of_their_sessions():
    world = SimulatedWorld(SMALL_WORLD)
    day = world.days()[1]
    asked: dict[int, SessionRequest] = {}
    answers: dict[int, Served] = {}
    shuffled = _shuffled(SMALL_WORLD.n_items, arm="arm-b")

    def recommend(requests):
        out = shuffled(requests)
        for r, s in zip(requests, out):
            asked[r.session_id], answers[r.session_id] = r, s
        return out

    result = ClosedLoopWorld(world, LoopConfig(served_share=0.5, served_k=30)).day(day, recommend)
    events, log = result.events, result.serving_log
    impressions = events[events["outcome"] == "impression"]
    assert set(asked) == set(impressions["session_id"])  # at share 0.5 every session has a slot
    n_placed = 0
    for session_id, rows in impressions.groupby("session_id", sort=False):
        request, served = asked[session_id], answers[session_id]
        assert request.user_id == rows["user_id"].iat[0] and request.surface == rows["surface"].iat[0]
        assert request.k == 30
        items = rows["item_id"].tolist()
        k = min(int(np.floor(0.5 * len(items) + 0.5)), 30)
        organic_rest = set(items[k:])
        expected = [i for i in dict.fromkeys(served.items) if i not in organic_rest][:k]
        assert items[: len(expected)] == expected  # in rank order, at the top
        mine = log[log["session_id"] == session_id]
        assert mine["position"].tolist() == list(range(len(expected)))
        assert mine["item_id"].tolist() == expected
        assert (mine["user_id"] == request.user_id).all()
        assert set(mine["arm"]) == {"arm-b"} and set(mine["version"]) == {"v7"}
        assert set(mine["served_by"]) == {"champion"}
        assert (mine["ts"].to_numpy() == rows["event_ts"].to_numpy()[: len(expected)]).all()
        n_placed += len(expected)
    assert n_placed == len(log) > 0
    # the outcome in the log is the engagement row that followed that impression in the events
    nxt = events["outcome"].shift(-1).where(events["outcome"].shift(-1) != "impression", "impression")
    outcome_of = dict(zip(zip(events["session_id"], events["event_ts"], events["outcome"]), nxt))
    for row in log.itertuples():
        assert outcome_of[(row.session_id, row.ts, "impression")] == row.outcome
    assert (log.loc[~log["examined"], "outcome"] == "impression").all()


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_served_share_is_honoured_exactly(share):
    world = SimulatedWorld(SMALL_WORLD)
    day = world.days()[0]
    result = ClosedLoopWorld(world, LoopConfig(served_share=share, served_k=300)).day(
        day, _shuffled(SMALL_WORLD.n_items)
    )
    impressions = result.events[result.events["outcome"] == "impression"]
    length = impressions.groupby("session_id").size()
    served = result.serving_log.groupby("session_id").size().reindex(length.index, fill_value=0)
    wanted = np.floor(share * length + 0.5).astype(int)
    # a full permutation of the catalogue always has enough items the session does not show
    assert (served == wanted).all()
    assert abs(served.sum() / length.sum() - share) < 0.02


# ---------------------------------------------------------------- user model


def test_position_bias_lowers_engagement_further_down_the_list():
    world = SimulatedWorld(BUSY_WORLD)
    loop = LoopConfig(served_share=1.0, **NO_FATIGUE)
    result = ClosedLoopWorld(world, loop).day(world.days()[0], _shuffled(BUSY_WORLD.n_items))
    log = result.serving_log
    engaged = log["outcome"] != "impression"
    assert not engaged[~log["examined"]].any()  # an unexamined item is never engaged
    by_pos = (
        log.assign(engaged=engaged)
        .groupby("position")
        .agg(n=("engaged", "size"), examined=("examined", "mean"), engaged=("engaged", "mean"))
    )
    # the examined share follows (1 + p) ** -eta
    top = by_pos.loc[0:5]
    np.testing.assert_allclose(top["examined"], loop.examination_probability(top.index.to_numpy()), atol=0.06)
    # random lists: the item does not depend on the position, the engagement rate falls with it
    rate = lambda lo, hi: (log.loc[log["position"].between(lo, hi), "outcome"] != "impression").mean()  # noqa: E731
    assert rate(0, 0) > 1.4 * rate(3, 6) > 1.4 * 1.2 * rate(12, 40)
    # while the engagement rate of examined items does not
    examined = log[log["examined"]]
    ex_rate = lambda lo, hi: (examined.loc[examined["position"].between(lo, hi), "outcome"] != "impression").mean()  # noqa: E731
    assert 0.6 < ex_rate(12, 40) / ex_rate(0, 0) < 1.5


def _fatigue_run(history: FatigueHistory, world: SimulatedWorld, recommend):
    # one batch for the whole day: fatigue then comes from `history` alone (within a day, what a
    # user engaged in an earlier batch feeds back into later ones, which breaks the comparison)
    loop = LoopConfig(served_share=1.0, batch_minutes=24 * 60)
    return ClosedLoopWorld(world, loop).day(world.days()[1], recommend, history)


def test_fatigue_items_engaged_or_seen_often_are_engaged_less():
    world = SimulatedWorld(BUSY_WORLD)
    day0 = world.days()[0]
    # the recommender serves each user the same list every time
    lists = {
        u: np.random.default_rng(u).permutation(BUSY_WORLD.n_items)[:20].tolist() for u in range(BUSY_WORLD.n_users)
    }

    def recommend(requests):
        return [Served(lists[r.user_id], "v", "a", "champion") for r in requests]

    def yesterday(outcomes: list[str]) -> pd.DataFrame:
        """Each user's served items, each with `outcomes` rows yesterday."""
        rows = [(u, i, o) for u, items in lists.items() for i in items for o in outcomes]
        user, item, outcome = map(list, zip(*rows))
        ts = pd.Timestamp(day0, tz="UTC") + pd.Timedelta(hours=12)
        return pd.DataFrame(
            {
                "user_id": user,
                "item_id": item,
                "surface": "homefeed",
                "outcome": outcome,
                "event_ts": ts,
                "session_id": 1,
                "query_id": pd.NA,
            }
        )

    fresh = _fatigue_run(FatigueHistory(), world, recommend).serving_log
    engaged = _fatigue_run(FatigueHistory.from_events(yesterday(["impression", "save"])), world, recommend)
    seen_often = _fatigue_run(FatigueHistory.from_events(yesterday(["impression"] * 30)), world, recommend)
    fresh_engaged = fresh["outcome"] != "impression"
    assert fresh_engaged.sum() > 200
    for tired in (engaged.serving_log, seen_often.serving_log):
        # the same slots and the same random numbers: fatigue only removes engagements
        assert (tired["item_id"].to_numpy() == fresh["item_id"].to_numpy()).all()
        tired_engaged = tired["outcome"] != "impression"
        assert not (tired_engaged & ~fresh_engaged).any()
        assert tired_engaged.sum() < 0.8 * fresh_engaged.sum()
    # expected: engaged once, one day ago (half-life 3 days): x 0.5 ** (0.5 ** (1/3)), and one
    # impression x exp(-0.79 / 20); 30 impressions a day ago: x exp(-30 * 0.79 / 20)
    ratio = (engaged.serving_log["outcome"] != "impression").sum() / fresh_engaged.sum()
    assert 0.5 < ratio < 0.75
    ratio = (seen_often.serving_log["outcome"] != "impression").sum() / fresh_engaged.sum()
    assert 0.2 < ratio < 0.45


def test_fatigue_history_aggregates_by_day_and_decays():
    world = SimulatedWorld(SMALL_WORLD)
    days = world.days()
    frames = [world.day(d) for d in days[:2]]
    history = FatigueHistory.from_events(frames[0])
    assert history.through == days[0]
    history.update(frames[1])
    assert history.through == days[1]
    assert history.shown.sum() == sum(int((f["outcome"] == "impression").sum()) for f in frames)
    one = FatigueHistory.from_events(pd.concat(frames[::-1], ignore_index=True))  # order does not matter
    assert one.equals(history)
    state = history.state(days[2], half_life_days=1.0, n_items=SMALL_WORLD.n_items)
    weights = history.shown * np.where(history.day == days[0].toordinal(), 0.25, 0.5)
    assert np.isclose(state.shown.sum(), weights.sum())


# ---------------------------------------------------------------- what a request sees


@pytest.mark.slow
def test_a_request_sees_only_its_users_events_before_its_batch_window():
    world = SimulatedWorld(BUSY_WORLD)
    day = world.days()[0]
    batches: list[list[SessionRequest]] = []
    shuffled = _shuffled(BUSY_WORLD.n_items)

    def recommend(requests):
        batches.append(list(requests))
        return shuffled(requests)

    loop = LoopConfig(batch_minutes=30)
    result = ClosedLoopWorld(world, loop).day(day, recommend)
    events = result.events
    day_start = pd.Timestamp(day, tz="UTC")
    window = pd.Timedelta(minutes=30)
    assert result.batches == len(batches) > 24
    previous_window = None
    n_seen = 0
    for batch in batches:
        starts = [pd.Timestamp(r.ts) for r in batch]
        assert starts == sorted(starts)  # session-start order
        window_start = day_start + ((starts[0] - day_start) // window) * window
        assert all(window_start <= s < window_start + window for s in starts)  # one window per call
        assert previous_window is None or window_start > previous_window
        previous_window = window_start
        for r in batch:
            seen = r.recent_events
            assert pd.Timestamp(r.ts).tzinfo is not None
            assert (seen["user_id"] == r.user_id).all()
            assert (seen["event_ts"] < window_start).all()  # nothing at or after its window
            assert r.session_id not in set(seen["session_id"])
            assert seen["event_ts"].is_monotonic_increasing
            # and everything of that user before the window
            mine = events[(events["user_id"] == r.user_id) & (events["event_ts"] < window_start)]
            assert len(seen) == len(mine)
            n_seen += len(seen)
            if len(seen):
                EVENT_SCHEMA.validate(seen)
    assert n_seen > 1000  # requests do see the day's earlier events
    # the session's own first impression is at the request time
    first = events[events["outcome"] == "impression"].groupby("session_id")["event_ts"].min()
    for r in batches[5]:
        assert first[r.session_id] == pd.Timestamp(r.ts)


# ---------------------------------------------------------------- truth


def test_expected_engagement_matches_search_rates_and_follows_an_interest_shift():
    drift_day = SMALL_WORLD.start_date + dt.timedelta(days=2)
    base = SimulatedWorld(SMALL_WORLD)
    shifted = SimulatedWorld(
        dataclasses.replace(SMALL_WORLD, drift_day=drift_day, drift_kind="interest_shift", drift_strength=1.0)
    )
    users = np.arange(SMALL_WORLD.n_users)
    before, after = drift_day - dt.timedelta(days=1), drift_day
    for surface in SURFACES:
        truth_before = shifted.expected_engagement(users, surface, before)
        np.testing.assert_array_equal(truth_before["save"], base.expected_engagement(users, surface, before)["save"])
        truth_after = shifted.expected_engagement(users, surface, after)
        for outcome in ("click", "save", "hide"):
            assert truth_after[outcome].shape == (SMALL_WORLD.n_users, SMALL_WORLD.n_items)
            assert not np.allclose(truth_after[outcome], truth_before[outcome])
    # the items a user is most likely to save move to the shifted topics
    topic_before = shifted.item_topic[shifted.expected_engagement(users, "homefeed", before)["save"].argmax(axis=1)]
    topic_after = shifted.item_topic[shifted.expected_engagement(users, "homefeed", after)["save"].argmax(axis=1)]
    assert (topic_after == shifted.topic_shift[topic_before]).mean() > 0.9
    dist = shifted.session_topic_distribution(users, after)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)

    # search: the session topic is the query's; the truth predicts the open-loop click rate
    world = SimulatedWorld(dataclasses.replace(SMALL_WORLD, events_per_day=30_000, n_days=1))
    day = world.days()[0]
    events = world.day(day)
    search = events[(events["surface"] == "search") & (events["outcome"] == "impression")]
    topics = world.query_topic[search["query_id"].to_numpy(dtype=np.int64)]
    p = world.impression_probabilities(
        search["user_id"].to_numpy(),
        search["item_id"].to_numpy(),
        topics,
        np.full(len(search), SURFACES.index("search")),
        day,
    )
    per_user = world.expected_engagement(search["user_id"].to_numpy()[:50], "search", day, session_topics=topics[:50])
    np.testing.assert_allclose(per_user["click"][np.arange(50), search["item_id"].to_numpy()[:50]], p["click"][:50])
    clicks = (events[events["surface"] == "search"]["outcome"] == "click").sum()
    assert abs(clicks / p["click"].sum() - 1.0) < 0.12


def test_closed_loop_truth_includes_fatigue():
    world = SimulatedWorld(SMALL_WORLD)
    days = world.days()
    history = FatigueHistory.from_events(world.day(days[0]))
    closed = ClosedLoopWorld(world)
    users = np.arange(SMALL_WORLD.n_users)
    plain = world.expected_engagement(users, "homefeed", days[1])
    tired = closed.expected_engagement(users, "homefeed", days[1], history)
    touched = np.zeros_like(plain["click"], dtype=bool)
    touched[history.user, history.item] = True
    np.testing.assert_array_equal(tired["click"][~touched], plain["click"][~touched])
    assert (tired["click"][touched] < plain["click"][touched]).all()
