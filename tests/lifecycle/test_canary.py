"""The canary gate's rules, on hand-made metric sets."""

from serving.evaluation.canary import GatePolicy, gate

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


def test_a_nan_metric_never_passes():
    passed, reasons = gate({**CHAMPION, "recall@100": float("nan")}, CHAMPION)
    assert not passed and len(reasons) == 2  # below the floor, and worse than the champion


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
