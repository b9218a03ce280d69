"""Online canary trials in the closed-loop world (world.policy_loop.trials, what
benchmarks/canary_calibration measures the online gate with), on a small world."""

import numpy as np
import pytest

from serving.evaluation.online_gate import CONTINUE, OnlinePolicy
from world.policy_loop.harness import HarnessConfig, log_run, play_days, start_view
from world.policy_loop.policies import PopularityPolicy, RandomPolicy
from world.policy_loop.trials import SplitPolicy, aa_trials, in_canary, split_trials
from world.simulator import SimulatorConfig

pytestmark = pytest.mark.slow  # small worlds played a few times

SMALL = HarnessConfig(
    world=SimulatorConfig(seed=2, n_users=150, n_items=400, n_topics=6, events_per_day=5000, n_days=6),
    train_days=3,
    serve_days=3,
    yardstick_days=1,
    bootstrap=100,
)


@pytest.fixture(scope="module")
def small_run():
    return log_run(SMALL)


def test_a_split_serves_the_hashed_share_of_users_the_canary_in_one_shared_log(small_run):
    split = SplitPolicy(PopularityPolicy(), RandomPolicy(seed=3), salt=5, traffic=0.25)
    [day] = play_days(split, start_view(small_run), small_run.serve_days[:1])
    log = day.serving_log
    wanted = np.array([in_canary(s, u, 5, 0.25) for s, u in zip(log["surface"], log["user_id"])])
    assert (log["served_by"].to_numpy() == np.where(wanted, "canary", "champion")).all()
    assert set(log.loc[wanted, "version"]) == {"random"} and set(log.loc[~wanted, "version"]) == {"popularity"}
    assert 0.1 < wanted.mean() < 0.4
    other = np.array([in_canary(s, u, 6, 0.25) for s, u in zip(log["surface"], log["user_id"])])
    assert (wanted != other).any()  # another salt, another split


def test_trials_stop_at_their_decision_or_the_last_day(small_run):
    policy = OnlinePolicy(max_days=len(small_run.serve_days), min_users=5)
    days = [r.serving_log for r in play_days(PopularityPolicy(), start_view(small_run), small_run.serve_days)]
    aa = aa_trials(days, range(2), 0.25, policy)
    assert len(aa) == 2 * 3 and all(t.action != CONTINUE and 1 <= t.days <= policy.max_days for t in aa)
    worse = split_trials(small_run, PopularityPolicy(), RandomPolicy(seed=1), range(1), 0.25, policy)
    assert {t.surface for t in worse} == {"homefeed", "related", "search"}
    assert all(t.action != CONTINUE and np.isfinite(t.log_ratio) for t in worse)
