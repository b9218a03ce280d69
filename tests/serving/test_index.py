"""serving.registry.index: index type by catalogue size, tuning to recall@100 against exact search."""

import faiss
import numpy as np
import pytest

from serving.registry.index import (
    EXACT_MAX_ITEMS,
    build_tuned_index,
    deserialize,
    exact_top_k,
    recall_at_k,
    serialize,
)


def clustered(n, d=32, n_clusters=64, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
    return centers[rng.integers(0, n_clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)


def test_small_catalogue_gets_an_exact_flat_index_with_perfect_recall():
    index, tuned = build_tuned_index(clustered(2000))
    assert tuned.kind == "flat" and isinstance(index, faiss.IndexFlatIP)
    assert tuned.recall_at_100 == 1.0 and tuned.target_met and tuned.ntotal == 2000


@pytest.mark.slow
def test_large_catalogue_gets_ivf_tuned_to_the_target_recall_below_exhaustive_search():
    x = clustered(EXACT_MAX_ITEMS + 10_000)
    index, tuned = build_tuned_index(x)
    assert tuned.kind == "ivf" and tuned.target_met
    assert tuned.recall_at_100 >= 0.98
    nlist = tuned.build_params["nlist"]
    assert 1 <= tuned.params["nprobe"] < nlist
    # the recorded recall is what the index gives on the tuning queries
    assert faiss.extract_index_ivf(index).nprobe == tuned.params["nprobe"]
    assert tuned.curve[-1]["recall"] == tuned.recall_at_100
    assert all(c["recall"] < 0.98 for c in tuned.curve[:-1])


def test_recall_is_measured_on_given_queries_against_exact_search():
    x = clustered(EXACT_MAX_ITEMS + 5000, seed=1)
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((200, 32)).astype(np.float32)
    index, tuned = build_tuned_index(x, "ivf", queries=queries)
    assert tuned.n_queries == 200
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = exact_top_k(xn, qn, 100)
    assert recall_at_k(index.search(qn, 100)[1], exact, 100) == pytest.approx(tuned.recall_at_100)


def test_unreachable_target_is_reported_not_met():
    _, tuned = build_tuned_index(clustered(1500), "hnsw", queries=clustered(30, seed=5), target_recall=1.01)
    assert not tuned.target_met and tuned.params["efSearch"] > 0 and tuned.recall_at_100 <= 1.0


def test_serialized_index_keeps_vectors_and_search_parameter():
    index, tuned = build_tuned_index(clustered(EXACT_MAX_ITEMS + 2000, seed=2))
    copy = deserialize(serialize(index))
    q = clustered(20, seed=3)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert faiss.extract_index_ivf(copy).nprobe == tuned.params["nprobe"]
    np.testing.assert_array_equal(copy.search(q, 10)[1], index.search(q, 10)[1])
