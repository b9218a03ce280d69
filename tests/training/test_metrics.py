"""Hand-computed cases for training.metrics."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from training.merge import Candidate, budget_shares, merge_by_budget, merge_rows
from training.metrics import (
    catalogue_coverage,
    collect_ranks,
    distinct_items_per_list,
    evaluate_public,
    full_ranking_ranks,
    item_counts,
    popularity_scorer,
    popularity_scores,
    rank_metrics,
    recall_by_outcome,
    unordered_recall_at_k,
)

# ---------------------------------------------------------------------------------------------
# rank_metrics
# ---------------------------------------------------------------------------------------------


def test_rank_metrics_hand_computed() -> None:
    m = rank_metrics([1, 3, 11, 60])
    assert list(m) == ["hr@10", "ndcg@10", "hr@50", "ndcg@50"]
    assert m["hr@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)  # 0.375
    assert m["hr@50"] == pytest.approx(0.75)
    assert m["ndcg@50"] == pytest.approx((1 + 0.5 + 1 / math.log2(12)) / 4)


def test_rank_metrics_accepts_tensors_and_custom_ks() -> None:
    m = rank_metrics(torch.tensor([1, 2]), ks=(1,))
    assert m == {"hr@1": 0.5, "ndcg@1": 0.5}
    with pytest.raises(ValueError):
        rank_metrics([])
    with pytest.raises(ValueError):
        rank_metrics([0, 1])  # ranks are 1-based


# ---------------------------------------------------------------------------------------------
# full_ranking_ranks
# ---------------------------------------------------------------------------------------------

SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5],  # user 0: target 3 (0.6)
        [0.1, 0.5, 0.5, 0.2, 0.9],  # user 1: target 1 (0.5), tied with item 2
    ]
)
TARGETS = torch.tensor([3, 1])


def test_full_ranking_without_filter() -> None:
    # user 0: items 0, 1, 2 score higher -> rank 4.
    # user 1: item 4 higher, item 2 tied -> pessimistic 3, optimistic 2.
    assert full_ranking_ranks(SCORES, TARGETS).tolist() == [4, 3]
    assert full_ranking_ranks(SCORES, TARGETS, ties="optimistic").tolist() == [4, 2]


def test_seen_filter_changes_rank_and_keeps_target() -> None:
    before = SCORES.clone()
    # user 0 saw items 0, 2 and the target 3 itself: only item 1 stays above -> rank 2.
    # user 1 saw item 4: only the tied item 2 remains -> pessimistic 2, optimistic 1.
    seen_lists = [[0, 2, 3], [4]]
    assert full_ranking_ranks(SCORES, TARGETS, seen_lists).tolist() == [2, 2]
    assert full_ranking_ranks(SCORES, TARGETS, seen_lists, ties="optimistic").tolist() == [2, 1]
    padded = torch.tensor([[0, 2, 3], [4, -1, -1]])
    assert full_ranking_ranks(SCORES, TARGETS, padded).tolist() == [2, 2]
    assert full_ranking_ranks(SCORES, TARGETS, padded.numpy()).tolist() == [2, 2]
    # A custom pad value (e.g. 0 when item 0 is the padding index) is ignored as well.
    assert full_ranking_ranks(SCORES, TARGETS, [[0, 2, 3], [4, 0]], pad=0).tolist() == [3, 2]
    assert torch.equal(SCORES, before), "scores must not be modified"


def test_degenerate_scores_are_not_rewarded() -> None:
    # A constant scorer: pessimistic rank = every unfiltered item, optimistic would be 1.
    flat = torch.zeros(1, 5)
    assert full_ranking_ranks(flat, [2], [[0]]).tolist() == [4]
    assert full_ranking_ranks(flat, [2], [[0]], ties="optimistic").tolist() == [1]
    nan_target = torch.tensor([[0.1, float("nan"), 0.3]])
    assert full_ranking_ranks(nan_target, [1]).tolist() == [3]
    assert full_ranking_ranks(nan_target, [1], ties="optimistic").tolist() == [3]


def test_full_ranking_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        full_ranking_ranks(SCORES, [5, 0])  # target out of range
    with pytest.raises(ValueError):
        full_ranking_ranks(SCORES, [0])  # wrong batch
    with pytest.raises(ValueError):
        full_ranking_ranks(SCORES, TARGETS, [[9], []])  # seen out of range
    with pytest.raises(ValueError):
        full_ranking_ranks(SCORES, TARGETS, ties="average")


def test_full_ranking_matches_naive_loop_and_is_fast() -> None:
    gen = torch.Generator().manual_seed(0)
    batch, n_items = 512, 4000
    scores = torch.randn(batch, n_items, generator=gen)
    targets = torch.randint(0, n_items, (batch,), generator=gen)
    rng = np.random.default_rng(0)
    seen = [rng.choice(n_items, size=int(rng.integers(20, 300)), replace=False).tolist() for _ in range(batch)]
    ranks = full_ranking_ranks(scores, targets, seen)
    for b in range(0, batch, 97):  # naive check on a few users
        s = scores[b].clone()
        s[seen[b]] = float("-inf")
        s[targets[b]] = scores[b, targets[b]]
        assert ranks[b].item() == int((s >= s[targets[b]]).sum())
    # 6040 users (MovieLens-1M) in batches of 512: must take well under a second.
    batches = [(scores, targets, seen)] * 12
    start = time.perf_counter()
    collect_ranks(lambda x: x, batches)
    assert time.perf_counter() - start < 3.0  # typically ~0.2 s; loose for a shared machine


# ---------------------------------------------------------------------------------------------
# evaluate_public and popularity
# ---------------------------------------------------------------------------------------------


def test_evaluate_public_over_batches() -> None:
    batches = [(SCORES, TARGETS, [[0, 2, 3], [4]]), (SCORES[:1], TARGETS[:1], None)]
    m = evaluate_public(lambda x: x, batches)
    # ranks 2, 2, 4
    assert m["hr@10"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx((2 / math.log2(3) + 1 / math.log2(5)) / 3)
    assert set(m) == {"hr@10", "ndcg@10", "hr@50", "ndcg@50"}
    with pytest.raises(ValueError):
        evaluate_public(lambda x: x, [])


def test_popularity_scores_and_baseline() -> None:
    assert popularity_scores({0: 5, 1: 3, 3: 10}, 5).tolist() == [5, 3, 0, 10, 0]
    assert popularity_scores([2, 1], 3).tolist() == [2, 1, 0]
    assert item_counts([0, 0, 3, 1], 4).tolist() == [2, 1, 0, 1]
    with pytest.raises(ValueError):
        popularity_scores({7: 1}, 5)

    pop = popularity_scores([10, 8, 6, 4, 2], 5)
    score_fn = popularity_scorer(pop)
    assert score_fn(torch.zeros(3, 7)).shape == (3, 5)
    assert score_fn([[1], [2]]).shape == (2, 5)
    # user 0 saw item 0, target 2 -> above it only item 1 -> rank 2;
    # user 1 saw nothing, target 4 (least popular) -> rank 5.
    batches = [(torch.zeros(2, 1), torch.tensor([2, 4]), [[0], []])]
    m = evaluate_public(score_fn, batches, ks=(1, 10))
    assert m["hr@1"] == 0.0
    assert m["hr@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / 2)


# ---------------------------------------------------------------------------------------------
# PinRec unordered recall
# ---------------------------------------------------------------------------------------------


def test_unordered_recall_hand_computed() -> None:
    retrieved = [[1, 2, 2, 3], [5], [7, 8]]
    future = [{2, 3, 9}, set(), [8, 8]]
    # user 0: hits {2, 3} / min(4, 3) = 2/3; user 1 skipped (empty future); user 2: 1/min(2, 1).
    assert unordered_recall_at_k(retrieved, future) == pytest.approx((2 / 3 + 1) / 2)
    # k=2: user 0 keeps [1, 2] -> 1 / min(2, 3) = 0.5; user 2 -> 1.
    assert unordered_recall_at_k(retrieved, future, k=2) == pytest.approx(0.75)


def test_unordered_recall_duplicates_and_empty() -> None:
    # Duplicates take slots but count once: 1 hit / min(3, 2).
    assert unordered_recall_at_k([[2, 2, 2]], [{2, 3}], k=3) == pytest.approx(0.5)
    assert unordered_recall_at_k([[]], [{1}]) == 0.0
    assert math.isnan(unordered_recall_at_k([[1]], [set()]))
    assert math.isnan(unordered_recall_at_k([], []))
    with pytest.raises(ValueError):
        unordered_recall_at_k([[1]], [])


def test_recall_by_outcome() -> None:
    retrieved = [[1, 2], [3]]
    futures = {"click": [{1}, {4}], "save": [{2, 5}, set()]}
    # click: user 0 -> 1/1, user 1 -> 0/1 -> 0.5; save: user 0 -> 1/min(2, 2), user 1 skipped.
    assert recall_by_outcome(retrieved, futures) == {"click": 0.5, "save": 0.5}
    per_outcome = {"click": [[4], [4]], "save": [[2, 5], [9]]}
    assert recall_by_outcome(per_outcome, futures) == {"click": 0.5, "save": 1.0}


# ---------------------------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------------------------


def test_diversity() -> None:
    lists = [[1, 2, 2], [3], []]
    assert distinct_items_per_list(lists) == pytest.approx(1.0)  # (2 + 1 + 0) / 3
    assert distinct_items_per_list([]) == 0.0
    assert catalogue_coverage(lists, 10) == pytest.approx(0.3)
    assert catalogue_coverage([[1, 2], [2, 1]], 4) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        catalogue_coverage([[1, 2, 3]], 2)


# ---------------------------------------------------------------------------------------------
# merge_by_budget
# ---------------------------------------------------------------------------------------------

CLICK = ("click", "next", [10, 11, 12, 13], [0.9, 0.8, 0.7, 0.6])
SAVE = ("save", "next", [10, 20, 21], [0.95, 0.5, 0.4])


def test_budget_shares() -> None:
    assert budget_shares({"a": 0.29, "b": 0.71}, 100) == {"a": 29, "b": 71}
    assert budget_shares({"a": 2, "b": 1}, 4) == {"a": 2, "b": 1}
    with pytest.raises(ValueError):
        budget_shares({"a": 0}, 4)
    with pytest.raises(ValueError):
        budget_shares({"a": -1, "b": 2}, 4)


def test_budget_shares_survive_huge_and_tiny_weights() -> None:
    """Weights near the float limits split k like their ratios: no overflow to inf, no floor(inf)."""
    assert budget_shares({"a": 1e308, "b": 1e308}, 100) == {"a": 50, "b": 50}
    assert budget_shares({"a": 1e307}, 100) == {"a": 100}
    assert budget_shares({"a": 5e-324}, 10) == {"a": 10}
    assert budget_shares({"a": 5e-324, "b": 5e-324}, 10) == {"a": 5, "b": 5}
    for bad in ({"a": float("inf")}, {"a": float("nan"), "b": 1.0}):
        with pytest.raises(ValueError):
            budget_shares(bad, 4)


def test_merge_equal_shares_and_dedup() -> None:
    # Quotas 2 + 2. Item 10 is best under save (0.95) so save takes it; click skips it and takes
    # 11, 12; save's second slot is 20 (0.5) even though click's 13 (0.6) scores higher.
    out = merge_by_budget([CLICK, SAVE], {"click": 1, "save": 1}, k=4)
    assert out == [
        Candidate(10, 0.95, "save", "next"),
        Candidate(11, 0.8, "click", "next"),
        Candidate(12, 0.7, "click", "next"),
        Candidate(20, 0.5, "save", "next"),
    ]
    assert out[0] == (10, 0.95, "save", "next")  # plain tuples


def test_merge_remainder_goes_to_best_score() -> None:
    # Quotas floor(4*2/3)=2 (click), floor(4/3)=1 (save); the one left over goes to the best
    # remaining candidate, click's 13 (0.6) over save's 20 (0.5).
    out = merge_by_budget([CLICK, SAVE], {"click": 2, "save": 1}, k=4)
    assert [(c.item, c.outcome) for c in out] == [(10, "save"), (11, "click"), (12, "click"), (13, "click")]


def test_merge_unfilled_quota_is_refilled() -> None:
    click = ("click", "next", [1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6])
    save = ("save", "next", [5], [0.1])
    out = merge_by_budget([click, save], None, k=4)  # None: equal weights
    assert [c.item for c in out] == [1, 2, 3, 5]


def test_merge_offsets_exclude_invalid_and_unweighted() -> None:
    lists = [
        ("click", "next", np.array([1, 2, -1]), np.array([0.9, 0.8, 0.0], dtype=np.float32)),
        ("click", "day", [3, 1], [0.85, 0.7]),
        ("hide", "next", [7], [0.99]),  # weight absent: ignored
    ]
    out = merge_by_budget(lists, {"click": 1}, k=3, exclude={2})
    assert [(c.item, c.offset) for c in out] == [(1, "next"), (3, "day")]
    assert type(out[0].item) is int and type(out[0].score) is float
    assert out[0].score == pytest.approx(0.9)
    assert merge_by_budget(lists, {"click": 1}, k=0) == []
    assert merge_by_budget([], None, k=5) == []
    with pytest.raises(ValueError):
        merge_by_budget([("click", "next", [1, 2], [0.5])], None, k=2)


def test_merge_rows_on_faiss_arrays_equals_merge_by_budget() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        q, n, k = int(rng.integers(1, 9)), int(rng.integers(1, 30)), int(rng.integers(1, 40))
        outcomes = [("click", "save", "hide")[i] for i in rng.integers(0, 3, q)]
        offsets = [f"offset{i}" for i in range(q)]
        items = rng.integers(-1, 40, (q, n))  # duplicates across rows, faiss's -1 padding
        scores = np.round(rng.random((q, n)), int(rng.integers(1, 4))).astype(np.float32)  # ties
        scores[0, 0] = np.nan if rng.random() < 0.1 else scores[0, 0]
        valid = (items >= 0) & (rng.random((q, n)) < 0.9)
        weights = {o: float(rng.integers(0, 3)) for o in ("click", "save", "hide")}
        weights["click"] = weights["click"] or 1.0
        lists = [(outcomes[r], offsets[r], items[r][valid[r]], scores[r][valid[r]]) for r in range(q)]
        assert merge_rows(outcomes, offsets, items, scores, valid, weights, k) == merge_by_budget(lists, weights, k)
