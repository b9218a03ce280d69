"""The paired policy harness and the offline yardstick (issue 24) on a small world."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from serving.evaluation.replay import policy_lists
from serving.evaluation.yardstick import (
    YARDSTICK,
    YARDSTICK_K,
    ips_recall_at_k,
    logged_impressions,
    recall_at_k,
    yardstick,
)
from serving.service.exploration import ExplorationConfig, explore
from world.policy_loop.harness import (
    HarnessConfig,
    compare,
    log_run,
    offline_measures,
    pair_agreement,
    policy_lister,
    serve,
    start_view,
)
from world.policy_loop.policies import HiddenItemsPolicy, OraclePolicy, PopularityPolicy, RandomPolicy
from world.simulator import SimulatorConfig

pytestmark = pytest.mark.slow  # a minute or two on the shared 2 cores (small worlds played several times)

TINY = HarnessConfig(
    world=SimulatorConfig(seed=1, n_users=150, n_items=400, n_topics=6, events_per_day=5000, n_days=5),
    train_days=3,
    serve_days=2,
    yardstick_days=2,
    exploration_share=0.2,
    bootstrap=200,
)


@pytest.fixture(scope="module")
def tiny_run():
    return log_run(TINY)


def test_the_harness_gives_the_same_figures_for_the_same_seeds(tiny_run):
    again = log_run(TINY)
    assert again.train_events.equals(tiny_run.train_events)
    first = {p.name: serve(p, tiny_run) for p in (RandomPolicy(), PopularityPolicy())}
    second = {p.name: serve(p, again) for p in (RandomPolicy(), PopularityPolicy())}
    rows_1 = compare(first, "random", TINY.world.n_items, TINY.bootstrap)
    rows_2 = compare(second, "random", TINY.world.n_items, TINY.bootstrap)
    strip = [{k: v for k, v in r.items() if k != "serve_seconds"} for r in rows_1]
    assert strip == [{k: v for k, v in r.items() if k != "serve_seconds"} for r in rows_2]
    assert rows_1[1]["served_slots"] > 0 and rows_1[1]["saves_per_1k"] > 0


def test_every_policy_gets_the_same_sessions(tiny_run):
    from world.policy_loop.harness import play_days

    impressions = []
    for policy in (RandomPolicy(), PopularityPolicy()):
        results = play_days(policy, start_view(tiny_run), tiny_run.serve_days)
        ev = results[0].events
        impressions.append(ev.loc[ev["outcome"] == "impression", ["user_id", "session_id"]].reset_index(drop=True))
    assert impressions[0].equals(impressions[1])


def test_paired_intervals_of_identical_policies_contain_zero(tiny_run):
    a, b = RandomPolicy(seed=0), RandomPolicy(seed=0)
    b.name = "random-again"
    other = RandomPolicy(seed=1)
    other.name = "random-seed-1"
    outcomes = {p.name: serve(p, tiny_run) for p in (a, b, other)}
    rows = {r["name"]: r for r in compare(outcomes, "random", TINY.world.n_items, TINY.bootstrap)}
    same = rows["random-again"]
    assert same["paired_saves_vs_random"] == 0.0
    assert same["paired_saves_vs_random_lo"] <= 0.0 <= same["paired_saves_vs_random_hi"]
    aa = rows["random-seed-1"]  # another random list: an A/A test, noise only
    assert aa["paired_saves_vs_random_lo"] <= 0.0 <= aa["paired_saves_vs_random_hi"]
    assert aa["paired_clicks_vs_random_lo"] <= 0.0 <= aa["paired_clicks_vs_random_hi"]
    assert aa["paired_saves_vs_random_lo"] < aa["paired_saves_vs_random_hi"]


def test_the_yardstick_ranks_the_oracle_above_random_above_the_hidden_items(tiny_run):
    values = {}
    for policy in (OraclePolicy(), RandomPolicy(), HiddenItemsPolicy()):
        view = start_view(tiny_run)
        policy.start_day(view)

        impressions = logged_impressions(tiny_run.heldout_events, tiny_run.heldout_serving_log)
        lists = policy_lists(policy_lister(policy, view, tiny_run), impressions, YARDSTICK_K)
        values[policy.name] = yardstick(lists, impressions)
    assert values["oracle"]["value"] > values["random"]["value"] > values["hidden"]["value"]
    assert values["oracle"]["se"] > 0 and values["oracle"]["users"] > 50
    measures = offline_measures(OraclePolicy(), tiny_run)
    assert {YARDSTICK, "replay_lift@100", "user_auc", "explore_auc", "recall50", "ips_recall50"} <= set(measures)
    assert "ips_recall100_surface" in measures


def test_inverse_propensity_recall_counts_a_rarely_shown_engagement_more():
    # item 1 is shown in 4 sessions, item 2 in one; user 7 clicked both
    rows = [(s, 1, "impression") for s in range(4)] + [(9, 2, "impression"), (0, 1, "click"), (9, 2, "click")]
    future = pd.DataFrame(
        {
            "user_id": [7] * len(rows),
            "session_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "outcome": [r[2] for r in rows],
        }
    )
    assert recall_at_k({7: [1]}, future)["value"] == recall_at_k({7: [2]}, future)["value"] == 0.5
    popular, rare = ips_recall_at_k({7: [1]}, future)["value"], ips_recall_at_k({7: [2]}, future)["value"]
    assert (popular, rare) == pytest.approx((0.2, 0.8))
    # by surface: each engagement is looked for in its own surface's list
    on_search = future.assign(surface=["search"] * 5 + ["homefeed", "search"])
    lists = {(7, "homefeed"): [1], (7, "search"): [1]}
    assert ips_recall_at_k(lists, on_search, by_surface=True)["value"] == pytest.approx(0.2)
    lists = {(7, "homefeed"): [2], (7, "search"): [1]}
    assert ips_recall_at_k(lists, on_search, by_surface=True)["value"] == 0.0


def test_exploration_slots_are_logged_with_their_propensity(tiny_run):
    log = tiny_run.heldout_serving_log
    explored = log["propensity"] < 1.0
    assert 0.1 < explored.mean() < 0.3  # the share (0.2), less the slots the loop could not place
    assert np.allclose(log.loc[explored, "propensity"], 0.2 / TINY.world.n_items)
    assert (log.loc[~explored, "propensity"] == 1.0).all()
    rng = np.random.default_rng(0)
    items, props = explore(list(range(10)), 10, 1000, 0.0, rng)
    assert items == list(range(10)) and props == [1.0] * 10
    items, props = explore(list(range(10)), 10, 1000, 0.5, rng, exclude=[999])
    assert len(set(items)) == 10 and 999 not in items and {1.0, 0.5 / 1000} >= set(props)
    with pytest.raises(ValueError, match="exploration share"):
        ExplorationConfig({"homefeed": 1.5})


def test_a_bad_harness_config_is_refused():
    with pytest.raises(ValueError, match="needs"):
        replace(TINY, serve_days=10)
    with pytest.raises(ValueError, match="reference"):
        compare({}, "random", 10)


def test_pair_agreement_counts_only_the_pairs_users_tell_apart(tiny_run):
    served = {p.name: serve(p, tiny_run) for p in (OraclePolicy(), RandomPolicy(), HiddenItemsPolicy())}
    right = pair_agreement(served, {"oracle": 3.0, "random": 2.0, "hidden": 1.0}, "click", draws=200)
    wrong = pair_agreement(served, {"oracle": 1.0, "random": 2.0, "hidden": 3.0}, "click", draws=200)
    assert right["pairs"] == wrong["pairs"] >= 2  # the oracle is told apart from both others
    assert right["agreement"] == 1.0 and wrong["agreement"] == 0.0


def test_the_outcome_query_columns_read_each_list_against_the_worlds_truth(tiny_run):
    from benchmarks.policy_loop_queries import outcome_query_columns
    from events.contract import SURFACES
    from tests.helpers import tiny_model
    from world.policy_loop.models import loaded_version
    from world.policy_loop.policies import ModelPolicy

    model = tiny_model(n_items=TINY.world.n_items, item_id_offset=-1)  # item ids 0..n-1, as the world's
    model_policy = ModelPolicy("tiny", {s: loaded_version(model, s, "tiny") for s in SURFACES})
    cols = outcome_query_columns({"tiny": model_policy, "random": RandomPolicy()}, tiny_run, n_users=60, k=10)
    assert set(cols) == {"tiny", "random", "oracle"}  # model rows and the two references
    oracle, random = cols["oracle"], cols["random"]
    assert oracle["true_saves_save_query"] > random["true_saves_save_query"]
    assert oracle["true_clicks_click_query"] > oracle["true_clicks_save_query"]  # the best lists differ
    assert 0.0 <= cols["tiny"]["query_jaccard_save_click"] <= 1.0 and "query_jaccard_save_click" not in random
    assert all(v > 0 for v in cols["tiny"].values())
