"""Replay figures (serving.evaluation.replay): a policy judged on the logged impressions of its own lists."""

import numpy as np
import pandas as pd
import pytest

from serving.evaluation.replay import policy_lists, popularity_lister, random_lister, replay_measures
from serving.evaluation.yardstick import YARDSTICK, yardstick
from serving.service.encoder import UserSequence


def _impressions(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "session_id", "surface", "item_id", "engaged", "query_id"])
    return frame.assign(position=-1, propensity=1.0)


IMPRESSIONS = _impressions(
    [
        (1, 10, "homefeed", 100, True, -1),
        (1, 10, "homefeed", 101, False, -1),
        (1, 11, "homefeed", 100, False, -1),  # the same item shown again, not engaged this time
        (2, 20, "homefeed", 100, False, -1),
        (2, 20, "homefeed", 102, True, -1),
        (2, 21, "search", 103, False, 7),  # a search for query 7
    ]
)


def test_replay_is_the_engagement_rate_of_the_impressions_a_list_holds():
    lists = {(1, "homefeed", None): [100], (2, "homefeed", None): [102, 100], (2, "search", 7): [999]}
    m = replay_measures(lists, IMPRESSIONS, (1, 2))
    # top 1: user 1's two impressions of 100 (one engaged), user 2's one of 102 (engaged)
    assert m["replay@1"]["value"] == pytest.approx(2 / 3)
    assert m["replay@1"]["n"] == 2
    # top 2 adds user 2's impression of 100 (not engaged); search's list holds nothing shown
    assert m["replay@2"]["value"] == pytest.approx(2 / 4)
    # first impressions only: user 1's repeat of 100 is left out
    assert m["replay_first@1"]["value"] == pytest.approx(2 / 2)
    # over each user's own rate (user 1: 1/3, user 2: 1/3): 2 engagements / (2/3 + 1/3)
    assert m["replay_lift@1"]["value"] == pytest.approx(2.0)
    assert m["replay@1"]["se"] > 0  # the users differ (1 of 2, 1 of 1)


def test_a_list_of_what_users_engaged_with_replays_above_one_of_what_they_passed_over():
    good = {(1, "homefeed", None): [100], (2, "homefeed", None): [102]}
    bad = {(1, "homefeed", None): [101], (2, "homefeed", None): [100]}
    assert yardstick(good, IMPRESSIONS)["value"] > yardstick(bad, IMPRESSIONS)["value"]
    assert yardstick(good, IMPRESSIONS)["measure"] == YARDSTICK


def test_the_position_corrected_replay_does_not_prefer_lists_that_match_sought_out_impressions():
    # organic impressions (position -1) are engaged far more than the feed's slots: a list that
    # matches them replays above one that matches the feed's low slots, where users engage just as
    # the log's own slots there do, and above the log's average (1.0) only where it beats its place
    rows = []
    for user in range(40):
        rows.append((user, user, "homefeed", 100 + user, user % 2 == 0, -1, -1))  # organic, engaged 1/2
        rows.append((user, user, "homefeed", 200 + user, user % 10 == 0, 5, -1))  # slot 5, engaged 1/10
        rows.append((user, user, "homefeed", 300 + user, user % 10 == 1, 5, -1))
    columns = ["user_id", "session_id", "surface", "item_id", "engaged", "position", "query_id"]
    frame = pd.DataFrame(rows, columns=columns).assign(propensity=1.0)
    organic = {(u, "homefeed", None): [100 + u] for u in range(40)}
    low_slots = {(u, "homefeed", None): [200 + u] for u in range(40)}
    plain = {name: replay_measures(lists, frame, (1,)) for name, lists in (("organic", organic), ("low", low_slots))}
    assert plain["organic"]["replay@1"]["value"] > 4 * plain["low"]["replay@1"]["value"]
    assert plain["organic"]["replay_position@1"]["value"] == pytest.approx(1.0)
    assert plain["low"]["replay_position@1"]["value"] == pytest.approx(1.0)
    # a list of only the engaged slot-5 impressions beats its place: 4 engagements over 4 x 0.1
    engaged_low = {(u, "homefeed", None): [200 + u if u % 10 == 0 else 300 + u] for u in (0, 10, 20, 30, 1, 11, 21, 31)}
    assert replay_measures(engaged_low, frame, (1,))["replay_position@1"]["value"] == pytest.approx(10.0)


def test_a_list_that_holds_no_logged_impression_has_no_replay_figure():
    m = replay_measures({(1, "homefeed", None): [555]}, IMPRESSIONS, (10,))
    assert np.isnan(m["replay@10"]["value"]) and m["replay@10"]["n"] == 0


def test_the_baselines_leave_out_what_the_user_has_seen():
    z = np.zeros(0, np.int64)
    seen = UserSequence(z, z, z, z, shown_item_ids=np.array([100], np.int64))  # shown lately
    train = pd.DataFrame({"item_id": [100, 100, 100, 101, 101, 102], "outcome": ["save"] * 6})
    pop = popularity_lister(train, {1: seen}, ["save"])
    assert pop([1, 2], "homefeed", 2, [None, None]) == [[101, 102], [100, 101]]
    rnd = random_lister([100, 101, 102, 103], {1: seen}, seed=0)
    first, again = rnd([1], "homefeed", 3, [None]), rnd([1], "homefeed", 3, [None])
    assert first == again and 100 not in first[0] and len(first[0]) == 3


def test_a_search_list_is_asked_with_its_query():
    asked = []

    def lister(users, surface, k, queries):
        asked.extend(zip(users, [surface] * len(users), queries))
        return [[100] for _ in users]

    lists = policy_lists(lister, IMPRESSIONS, 2)
    assert set(lists) == {(1, "homefeed", None), (2, "homefeed", None), (2, "search", 7)}
    assert sorted(asked, key=str) == sorted(lists, key=str)


def test_replay_weighs_each_surface_by_its_share_of_the_log_not_by_how_much_of_it_a_list_reaches():
    shown = _impressions(
        [(1, 1, "homefeed", i, i == 1, -1) for i in (1, 2, 3, 4)]
        + [(1, 2, "search", 10, True, 5), (1, 2, "search", 11, True, 5)]
    )
    lists = {(1, "homefeed", None): [1, 2], (1, "search", 5): [10, 11]}
    m = replay_measures(lists, shown, (2,))
    # homefeed: 1 of 2 replayed engaged, search: 2 of 2; shares 4/6 and 2/6
    assert m["replay@2"]["value"] == pytest.approx(4 / 6 * 0.5 + 2 / 6 * 1.0)
    assert m["replay_pooled@2"]["value"] == pytest.approx(3 / 4)
