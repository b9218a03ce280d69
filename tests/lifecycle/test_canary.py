"""The canary gate's rules, on hand-made metric sets."""

from serving.evaluation.gate import GatePolicy, gate, gate_rules

CHAMPION = {
    "recall@100": 0.30,
    "recall@100/click": 0.28,
    "recall@100/save": 0.33,
    "latency_p50_ms": 10.0,
    "latency_p99_ms": 30.0,
}


def test_first_candidate_needs_only_the_floors():
    assert gate({"recall@100": 0.05, "latency_p50_ms": 9.0, "latency_p99_ms": 40.0}, None) == (True, [])
    passed, reasons = gate({"recall@100": 0.01, "latency_p99_ms": 40.0}, None)
    assert not passed and reasons == ["recall@100 = 0.0100 is below the floor 0.0200"]


def test_a_drop_within_tolerance_passes_and_beyond_it_fails():
    within = {**CHAMPION, "recall@100/save": 0.33 * 0.96}
    assert gate(within, CHAMPION, GatePolicy(tolerance=0.05))[0]
    worse = {**CHAMPION, "recall@100/save": 0.33 * 0.90}
    passed, reasons = gate(worse, CHAMPION, GatePolicy(tolerance=0.05))
    assert not passed and len(reasons) == 1 and reasons[0].startswith("recall@100/save")


def test_latency_is_judged_against_the_champion_and_an_absolute_cap():
    slow = {**CHAMPION, "latency_p50_ms": 16.0}
    passed, reasons = gate(slow, CHAMPION, GatePolicy(max_latency_ratio=1.5))
    assert not passed and "1.60x the champion" in reasons[0]
    capped = {**CHAMPION, "latency_p99_ms": 2500.0}
    assert not gate(capped, CHAMPION)[0]


def test_a_guarded_figure_may_fall_within_its_sampling_error_on_the_day():
    """A 10% drop of recall@100/save fails the 5% tolerance when the figures are precise, and
    passes when 1.96 standard errors of the difference (over the day's users) are larger."""
    worse = {**CHAMPION, "recall@100/save": 0.33 * 0.90}
    precise = {"recall@100/save_se": 0.002}
    assert not gate({**worse, **precise}, {**CHAMPION, **precise})[0]
    noisy = {"recall@100/save_se": 0.02}  # 1.96 * hypot(0.02, 0.02) = 0.055 > 0.033
    assert gate({**worse, **noisy}, {**CHAMPION, **noisy})[0]
    beyond = {**CHAMPION, "recall@100/save": 0.33 - 0.06}
    passed, reasons = gate({**beyond, **noisy}, {**CHAMPION, **noisy})
    assert not passed and "by more than 0.055 (1.96 standard errors of the difference)" in reasons[0]


def test_a_nan_metric_never_passes():
    passed, reasons = gate({**CHAMPION, "recall@100": float("nan")}, CHAMPION)
    assert not passed and len(reasons) == 2  # below the floor, and worse than the champion


def test_the_latency_rule_renders_positive_figures_as_it_is_read():
    rules = gate_rules({**CHAMPION, "latency_p99_ms": 244.05}, CHAMPION, GatePolicy(max_latency_p99_ms=2000.0))
    [cap] = [r for r in rules if r.rule == "latency cap"]
    assert (cap.candidate, cap.threshold, cap.passed) == (244.05, 2000.0, True)
    assert cap.margin == 2000.0 - 244.05 > 0
    assert cap.rendered() == "latency p99 244 ms <= cap 2000 ms, margin 1756 ms"
    [ratio] = [r for r in rules if r.rule == "latency vs champion"]
    assert ratio.rendered() == "latency_p50_ms ratio 1.00x <= cap 1.50x, margin 0.50x"
    slow = gate_rules({**CHAMPION, "latency_p99_ms": 2500.0}, None)
    [over] = [r for r in slow if r.rule == "latency cap"]
    assert not over.passed and over.rendered() == "latency p99 2500 ms > cap 2000 ms, over by 500 ms"


def test_a_candidate_below_popularity_on_the_yardstick_is_refused_also_without_a_champion():
    popularity = {"popularity": {"recall@100": 0.31}}
    candidate = {**CHAMPION, "recall@100": 0.30}
    for champion in (None, CHAMPION):
        passed, reasons = gate(candidate, champion, baselines=popularity)
        assert not passed
        assert reasons == ["recall@100 = 0.3000 does not beat the popularity policy's 0.3100"]
    # the yardstick is whatever the evaluation names; a tie does not beat; random where measured
    policy = GatePolicy(yardstick="ips_saves")
    tie = gate({**candidate, "ips_saves": 0.5}, None, policy, baselines={"popularity": {"ips_saves": 0.5}})
    assert not tie[0]
    both = {"popularity": {"ips_saves": 0.4}, "random": {"ips_saves": 0.6}}
    passed, reasons = gate({**candidate, "ips_saves": 0.5}, None, policy, baselines=both)
    assert not passed and reasons == ["ips_saves = 0.5000 does not beat the random policy's 0.6000"]
    assert gate({**candidate, "ips_saves": 0.7}, None, policy, baselines=both) == (True, [])
    [rule] = [
        r for r in gate_rules({**candidate, "ips_saves": 0.7}, None, policy, baselines=both) if r.bound == "random"
    ]
    assert rule.rendered() == "ips_saves vs random 0.7000 >= random 0.6000, margin 0.1000"


def test_staleness_is_one_rule_reported_by_the_gate_and_enforced_by_promote():
    from datetime import date

    from serving.registry.manifest import stale_reason

    passed, reasons = gate(
        CHAMPION, CHAMPION, candidate_data_through=date(2026, 1, 2), champion_data_through=date(2026, 1, 3)
    )
    assert not passed
    assert reasons == [stale_reason("candidate", "2026-01-02", "champion", "2026-01-03")]
    assert "the candidate trained on data through 2026-01-02, the champion through 2026-01-03" in reasons[0]
    assert stale_reason("v2", "2026-01-03", "v1", "2026-01-03") is None  # the same day is not older


# -------------------------------------------------------------------------------- ranking


def test_ranking_metrics_falling_beyond_the_absolute_tolerance_fail_the_gate():
    champion = {**CHAMPION, "slate_auc/click": 0.70, "slate_auc/save": 0.66, "slate_ndcg@10": 0.40}
    within = {**champion, "slate_auc/click": 0.695}
    assert gate(within, champion, GatePolicy(ranking_tolerance=0.01))[0]
    worse = {**champion, "slate_ndcg@10": 0.38}
    passed, reasons = gate(worse, champion, GatePolicy(ranking_tolerance=0.01))
    assert not passed and len(reasons) == 1 and reasons[0].startswith("slate_ndcg@10 = 0.3800")
    # a day without slates (no ranking figures) is judged on the rest
    assert gate(CHAMPION, champion)[0]


def test_slate_auc_and_ndcg_by_hand():
    from training.metrics import mean_of_slates, ndcg_at_k, slate_auc

    assert slate_auc([0.9, 0.1, 0.5], [True, False, False]) == 1.0
    assert slate_auc([0.1, 0.9, 0.5], [True, False, False]) == 0.0
    assert slate_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75  # a tie counts half
    assert slate_auc([0.3, 0.2], [True, True]) != slate_auc([0.3, 0.2], [True, True])  # NaN: no negative
    assert ndcg_at_k([0.9, 0.8, 0.1], [0, 0, 1], 10) == 0.5  # 1/log2(4) over 1
    assert ndcg_at_k([0.1, 0.8, 0.9], [0, 0, 1], 10) == 1.0
    assert ndcg_at_k([0.1, 0.2], [0, 0], 10) != ndcg_at_k([0.1, 0.2], [0, 0], 10)  # NaN: nothing to find
    assert mean_of_slates([0.5, float("nan"), 1.0]) == 0.75


def test_the_canary_scores_every_session_slate_with_the_ranking_head():
    import numpy as np
    import pandas as pd

    from serving.evaluation.canary import evaluate_version
    from serving.registry.index import build_tuned_index
    from serving.service import encoder as enc
    from serving.service.retriever import LoadedVersion
    from tests.helpers import tiny_model
    from training.metrics import ndcg_at_k, slate_auc

    model = tiny_model(rank_outcomes=("click", "save", "hide"))
    vectors, ids = enc.item_table(model)
    index, _ = build_tuned_index(vectors)
    version = LoadedVersion(
        "homefeed",
        "v1",
        {"files": {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}},
        model,
        index,
        ids,
    )
    t0 = pd.Timestamp("2026-02-02", tz="UTC")
    rows = []
    for user in (1, 2):
        for session, items in ((10 * user, [1001, 1002, 1003, 1004]), (10 * user + 1, [1005, 1006, 999_999])):
            for j, item in enumerate(items):
                ts = t0 + pd.Timedelta(minutes=session + j)
                rows.append((user, item, "homefeed", "impression", ts, session))
            rows.append((user, items[0], "homefeed", "click", ts + pd.Timedelta(seconds=5), session))
            rows.append((user, items[1], "homefeed", "save", ts + pd.Timedelta(seconds=6), session))
    day = pd.DataFrame(rows, columns=["user_id", "item_id", "surface", "outcome", "event_ts", "session_id"])
    figures = evaluate_version(version, {}, day, k=10, impression="impression")
    assert figures["slates"] == 4 and figures["ranked_by_ranking_head"] == 1.0
    # by hand: both users are cold (no sequence), so each has the same two slates' scores; the
    # unknown item 999999 is left out of the second slate
    known, per_outcome, combined, ranked_by = version.score_items(
        enc.UserSequence.empty(), [1001, 1002, 1003, 1004, 1005, 1006, 999_999], ["click", "save"]
    )
    assert ranked_by == "ranking_head" and known.tolist() == [1001, 1002, 1003, 1004, 1005, 1006]
    first, second = slice(0, 4), slice(4, 6)
    for outcome, pos in (("click", [0, 4]), ("save", [1, 5])):
        labels = np.isin(np.arange(6), pos)
        want = np.mean(
            [
                slate_auc(per_outcome[outcome][first], labels[first]),
                slate_auc(per_outcome[outcome][second], labels[second]),
            ]
        )
        assert abs(figures[f"slate_auc/{outcome}"] - want) < 1e-9
    gains = np.isin(np.arange(6), [0, 1, 4, 5]).astype(float)
    want = np.mean([ndcg_at_k(combined[first], gains[first]), ndcg_at_k(combined[second], gains[second])])
    assert abs(figures["slate_ndcg@10"] - want) < 1e-9
    # without impressions in the log there is nothing to rank
    plain = evaluate_version(version, {}, day[day["outcome"] != "impression"], k=10, impression="impression")
    assert "slates" not in plain and "slate_auc/click" not in plain
    # latency of compared versions: measured in turn on the same requests, `rounds` times each
    from serving.evaluation.canary import interleaved_retrievals

    latency, lists = interleaved_retrievals({"candidate": version, "champion": version}, {}, [1, 2], k=10, rounds=3)
    for role in ("candidate", "champion"):
        assert latency[role]["latency_samples"] == 6
        assert 0 < latency[role]["latency_p50_ms"] <= latency[role]["latency_p99_ms"]
    # ...and the lists of those requests stand in for the evaluation's own: the same figures
    again = evaluate_version(version, {}, day, k=10, impression="impression", retrieved_before=lists["candidate"])
    assert set(lists["candidate"]) == {1, 2}
    assert {m: again[m] for m in figures if "latency" not in m} == {
        m: figures[m] for m in figures if "latency" not in m
    }


def test_slots_a_compared_version_served_are_not_its_held_out_targets():
    import pandas as pd

    from serving.evaluation.canary import not_served_by

    day = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "session_id": [10, 10, 10, 20, 20],
            "surface": ["homefeed"] * 5,
            "item_id": [5, 5, 6, 5, 7],
            "outcome": ["impression", "save", "impression", "impression", "click"],
        }
    )
    log = pd.DataFrame(
        {
            "user_id": [1, 2, 2],
            "session_id": [10, 20, 20],
            "surface": ["homefeed"] * 3,
            "item_id": [5, 5, 7],
            "version": ["champ", "other-arm", "popularity"],
        }
    )
    kept = not_served_by(day, log, ("cand", "champ"))
    # user 1's item 5 (impression and save) was the champion's slot; the other arm's slots stay
    assert kept[["user_id", "item_id", "outcome"]].values.tolist() == [
        [1, 6, "impression"],
        [2, 5, "impression"],
        [2, 7, "click"],
    ]
    assert not_served_by(day, log.iloc[:0], ("cand", "champ")).equals(day)
    assert len(not_served_by(day, log, ("cand", None))) == len(day)


def test_a_ranking_figure_may_fall_within_its_noise_but_not_beyond_it():
    champion = {**CHAMPION, "slate_auc/click": 0.55, "slate_auc/click_se": 0.02}
    within_noise = {**champion, "slate_auc/click": 0.50, "slate_auc/click_se": 0.02}  # 1.96 * 0.028 = 0.055
    assert gate(within_noise, champion)[0]
    beyond = {**champion, "slate_auc/click": 0.49, "slate_auc/click_se": 0.02}
    passed, reasons = gate(beyond, champion)
    assert not passed and "standard errors of the difference" in reasons[0], reasons
    # precise figures: the absolute tolerance is the larger allowance and decides
    precise = {"slate_auc/click_se": 0.001}
    assert not gate({**beyond, **precise, "slate_auc/click": 0.535}, {**champion, **precise})[0]


def test_the_recall_floor_gives_way_only_to_a_yardstick_with_the_random_baseline_to_beat():
    from assets.lifecycle.canary import CanaryGateConfig

    outcomes = ("click", "save")
    with_random = CanaryGateConfig().policy(outcomes, "replay@100", random_measured=True)
    assert with_random.floors == {} and "replay@100" in with_random.ranking_guarded
    assert CanaryGateConfig().policy(outcomes, "replay@100").floors == {"recall@100": 0.02}  # no exploration
    assert CanaryGateConfig().policy(outcomes, "recall@100", random_measured=True).floors == {"recall@100": 0.02}
    baselines_off = CanaryGateConfig(beat_baselines=False).policy(outcomes, "replay@100", random_measured=True)
    assert baselines_off.floors == {"recall@100": 0.02}


def test_a_successor_below_a_baseline_within_its_sampling_error_passes_and_a_first_candidate_must_beat_it():
    """One day of a few hundred users: the position-corrected replay's standard errors are ~0.2 on
    values near 1. A successor (the surface has a champion) is refused only when it is below the
    baseline by more than baseline_z standard errors of the difference; a first candidate must
    beat every baseline on the yardstick."""
    from assets.lifecycle.canary import CanaryGateConfig

    policy = CanaryGateConfig().policy(("click", "save"), "replay@100", random_measured=True)
    assert policy.baseline_yardstick == "replay_position@100" and policy.baseline_z == 1.96
    popularity = {
        "popularity": {
            "replay@100": 0.065,
            "replay@100_se": 0.005,
            "replay_position@100": 1.07,
            "replay_position@100_se": 0.07,
        }
    }
    close = {**CHAMPION, "replay@100": 0.046, "replay@100_se": 0.008}
    close.update({"replay_position@100": 0.99, "replay_position@100_se": 0.16})
    champion = {**close, "replay@100": 0.045}
    rules = [r for r in gate_rules(close, champion, policy, baselines=popularity) if r.bound.startswith("popularity")]
    [rule] = rules
    assert (
        rule.passed and rule.metric == "replay_position@100 vs popularity" and rule.rule == "not worse than popularity"
    )
    assert abs(rule.threshold - (1.07 - 1.96 * (0.16**2 + 0.07**2) ** 0.5)) < 1e-9
    # far below it: refused, with the allowance in the reason
    far = {**close, "replay_position@100": 0.55}
    passed, reasons = gate(far, champion, policy, baselines=popularity)
    assert not passed and any(
        r.startswith("replay_position@100 = 0.5500 does not beat the popularity policy's 1.0700 and is below it")
        for r in reasons
    )
    # no champion: the first candidate must beat popularity on the yardstick itself
    passed, reasons = gate(close, None, policy, baselines=popularity)
    assert not passed and "replay@100 = 0.0460 does not beat the popularity policy's 0.0650" in reasons
    # baseline_z 0: a successor must beat each baseline, as before
    strict = CanaryGateConfig(baseline_z=0.0).policy(("click", "save"), "replay@100", random_measured=True)
    assert not gate(close, champion, strict, baselines=popularity)[0]


def test_the_evaluated_users_are_each_surfaces_sample_of_its_engaged_users():
    import pandas as pd

    from assets.lifecycle.canary import evaluation_users

    rows = [(u, "homefeed", "click") for u in range(100)]
    rows += [(u, "search", "save") for u in range(50, 60)]
    rows += [(u, "search", "impression") for u in range(200, 300)]  # shown only: not evaluated
    events = pd.DataFrame(rows, columns=["user_id", "surface", "outcome"])
    samples = evaluation_users(events, "impression", max_users=20)
    assert samples["homefeed"] == list(range(0, 100, 5))
    assert samples["search"] == list(range(50, 60))
    # a log without impressions: every event counts
    assert len(evaluation_users(events, None, max_users=1000)["search"]) == 110
