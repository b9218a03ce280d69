"""A sharded faiss index (serving.registry.shards): shards searched and merged answer as the unsharded
index, through the same file and the same retrieval path."""

import faiss
import numpy as np
import pytest

from serving.registry.index import (
    build_tuned_index,
    exact_top_k,
    normalize,
    read_index,
    recall_at_k,
    write_index,
)
from serving.registry.shards import ShardedIndex, read_sharded
from serving.service import encoder as enc
from serving.service.retriever import LoadedVersion
from tests.helpers import tiny_model
from tests.serving.test_index import clustered


def _queries(n=300, seed=9):
    return normalize(clustered(n, seed=seed))


@pytest.mark.slow
def test_a_sharded_ivf_index_has_the_recall_of_the_unsharded_one():
    x = normalize(clustered(30_000, seed=2))
    tune_q, eval_q = _queries(seed=3), _queries(seed=4)
    one, tuned_one = build_tuned_index(x, "ivf", queries=tune_q)
    sharded, tuned_sharded = build_tuned_index(x, "ivf", queries=tune_q, shards=4)
    assert isinstance(sharded, ShardedIndex) and sharded.n_shards == 4 and sharded.ntotal == len(x)
    assert [s.ntotal for s in sharded.shards] == [7500] * 4
    assert tuned_sharded.params == tuned_one.params and tuned_sharded.build_params["shards"] == 4
    exact = exact_top_k(x, eval_q, 100)
    recall_one = recall_at_k(one.search(eval_q, 100)[1], exact, 100)
    recall_sharded = recall_at_k(sharded.search(eval_q, 100)[1], exact, 100)
    assert recall_one >= 0.95
    assert abs(recall_sharded - recall_one) <= 0.001
    # the same lists probed over the same vectors: the same top 100 (order may differ on ties)
    same = recall_at_k(sharded.search(eval_q, 100)[1], one.search(eval_q, 100)[1], 100)
    assert same >= 0.999
    # faiss's merge (lists picked once), the numpy merge of preassigned lists, and each shard
    # searching alone give the same answer
    assert sharded._merged is not None and sharded._ivfs is not None
    numpy_merge = ShardedIndex(sharded.shards, sharded.bases)
    numpy_merge._merged = None
    alone = ShardedIndex(sharded.shards, sharded.bases)
    alone._merged, alone._ivfs = None, None
    want_scores, want = sharded.search(eval_q, 100)
    for other in (numpy_merge, alone):
        scores, rows = other.search(eval_q, 100)
        assert np.allclose(scores, want_scores, atol=1e-5)
        assert recall_at_k(rows, want, 100) >= 0.999  # the same items; the order of equal scores may differ


def test_a_sharded_flat_index_is_exact_and_pads_like_faiss():
    x = normalize(clustered(50, seed=5))
    sharded, tuned = build_tuned_index(x, "flat", shards=3)
    q = _queries(20)
    scores, rows = sharded.search(q, 60)
    want_scores = faiss.IndexFlatIP(x.shape[1])
    want_scores.add(x)
    ws, wr = want_scores.search(q, 60)
    assert np.array_equal(rows[:, :50], wr[:, :50]) and (rows[:, 50:] == -1).all()
    assert np.allclose(scores[:, :50], ws[:, :50], atol=1e-6) and np.isneginf(scores[:, 50:]).all()
    assert tuned.recall_at_100 == 1.0


@pytest.mark.slow
def test_a_sharded_index_is_one_file_and_a_host_can_read_only_its_shards(tmp_path):
    x = normalize(clustered(25_000, seed=6))
    sharded, tuned = build_tuned_index(x, "ivf", queries=_queries(), shards=3)
    path = tmp_path / "index.faiss"
    write_index(sharded, str(path))
    back = read_index(str(path), tuned.params)
    q = _queries(50, seed=7)
    assert np.array_equal(back.search(q, 100)[1], sharded.search(q, 100)[1])
    second = read_sharded(path, shards=[1])
    assert second.ntotal == sharded.shards[1].ntotal and second.bases.tolist() == [sharded.bases[1]]


def test_retrieval_serves_a_sharded_index_as_the_unsharded_one():
    model = tiny_model()
    vectors, ids = enc.item_table(model)
    files = {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}
    one = LoadedVersion("homefeed", "v1", {"files": files}, model, build_tuned_index(vectors)[0], ids)
    sharded = LoadedVersion("homefeed", "v1", {"files": files}, model, build_tuned_index(vectors, shards=4)[0], ids)
    rng = np.random.default_rng(0)
    for n in (0, 5, 40):
        seq = enc.UserSequence(
            rng.integers(1001, 1301, n),
            rng.choice([1, 2], n),
            rng.integers(0, 3, n),
            1_767_000_000_000_000 + np.arange(n) * 10**6,
        )
        got, want = sharded.retrieve(seq, 50).candidates, one.retrieve(seq, 50).candidates
        assert [c.item for c in got] == [c.item for c in want]
        assert np.allclose([c.score for c in got], [c.score for c in want], atol=1e-5)


def test_an_hnsw_index_is_not_sharded():
    with pytest.raises(ValueError, match="not sharded"):
        build_tuned_index(normalize(clustered(500)), "hnsw", shards=2)
