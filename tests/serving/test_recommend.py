"""`/v1/recommend`: retrieve N, rank them with the ranking head over the keys/values of the same
encode, return the top k; a batch answers what each request answers alone and a reused encoder
state what a fresh encode gives; a version without a ranking head orders by retrieval; invalid
input is a 4xx with the reason, like /v1/retrieve."""

import json
import uuid

import numpy as np
import pytest
import torch

from devstack.service import ServerThread, call
from events.contract import OUTCOME_CODE, SURFACE_CODE
from serving.registry.index import build_tuned_index
from serving.registry.publish import publish_model
from serving.service import encoder as enc
from serving.service.app import create_app
from serving.service.checks import checked_registry
from serving.service.encoder_state import EncoderStateCache
from serving.service.features import InMemoryFeatures
from serving.service.retriever import LoadedVersion, RecommendRequest
from serving.service.service import ServingConfig
from serving.service.versions import VersionManager
from tests.helpers import BAD_REQUESTS_OF_EVERY_ENDPOINT, tiny_model
from training.model import KVCache

T_US = 1_767_000_000_000_000
RANKED = ("click", "save", "hide")
N_CANDIDATES = 60
FEATURES = {
    7: {
        "seq_item_ids": [1001, 1002, 1003, 1004],
        "seq_outcomes": [OUTCOME_CODE["click"], OUTCOME_CODE["save"], OUTCOME_CODE["click"], OUTCOME_CODE["hide"]],
        "seq_surfaces": [SURFACE_CODE["homefeed"]] * 4,
        "seq_timestamps_us": [T_US + i * 60_000_000 for i in range(4)],
        "seq_length": 4,
    },
}


def _loaded(rank_outcomes=RANKED, version="v1") -> LoadedVersion:
    model = tiny_model(rank_outcomes=rank_outcomes)
    with torch.no_grad():  # a random ranking head gives near-equal probabilities: spread them
        if model.ranker is not None:
            model.ranker.out[2].weight.mul_(200.0)
    vectors, ids = enc.item_table(model)
    index, _ = build_tuned_index(vectors)
    files = {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}
    return LoadedVersion("homefeed", version, {"files": files}, model, index, ids)


def _sequence(rng, n: int) -> enc.UserSequence:
    codes = [OUTCOME_CODE[o] for o in ("click", "save", "hide", "impression")]
    return enc.UserSequence(
        rng.integers(1001, 1301, n),
        rng.choice(codes, n),
        rng.integers(0, 3, n),
        T_US + np.cumsum(rng.integers(1, 10**8, n)),
    )


def _fresh_ranking(loaded: LoadedVersion, seq: enc.UserSequence, items: list[int]) -> np.ndarray:
    """The reference: the sequence encoded from scratch, the ranking head over its keys/values."""
    model, encoder = loaded.model, loaded.encoder
    batch = encoder.batch(seq)
    with torch.no_grad():
        h, kv = model.encode(**batch, return_cache=True)
        n = int((batch["items"] > 0).sum())
        if n == 0:
            kv = KVCache(
                [k[:, :, :0] for k in kv.keys], [v[:, :, :0] for v in kv.values], torch.zeros(1, dtype=torch.long)
            )
        idx = torch.from_numpy(encoder.to_index(np.array(items)))[None]
        p = model.rank_probabilities(kv, idx, torch.zeros_like(idx), h[:, max(n - 1, 0)])
    return p[0].numpy()


def test_recommend_ranks_the_retrieved_candidates_by_the_weighted_probabilities():
    loaded = _loaded()
    seq = _sequence(np.random.default_rng(0), 30)
    weights = {"click": 0.75, "save": 0.25}
    result = loaded.recommend(seq, 10, weights, n_candidates=N_CANDIDATES)
    assert result.ranked_by == "ranking_head" and result.n_candidates == N_CANDIDATES
    retrieved = loaded.retrieve(seq, N_CANDIDATES, weights).candidates
    assert {r.item for r in result.items} <= {c.item for c in retrieved}
    # the top 10 of all 60 by the combined score, which is the weighted sum of the probabilities
    everything = loaded.recommend(seq, N_CANDIDATES, weights, n_candidates=N_CANDIDATES).items
    assert [r.item for r in result.items] == [r.item for r in everything[:10]]
    for r in everything:
        assert set(r.probabilities) == set(RANKED)
        assert r.score == pytest.approx(0.75 * r.probabilities["click"] + 0.25 * r.probabilities["save"], abs=1e-6)
    scores = [r.score for r in everything]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > N_CANDIDATES // 2
    # and the probabilities are those of a fresh encode of the history + the ranking head
    fresh = _fresh_ranking(loaded, seq, [r.item for r in everything])
    got = np.array([[r.probabilities[o] for o in RANKED] for r in everything])
    assert np.allclose(got, fresh, atol=1e-5)


def test_reused_encoder_states_rank_as_a_fresh_encode_and_a_batch_as_single_requests():
    loaded = _loaded()
    rng = np.random.default_rng(1)
    states = EncoderStateCache(64 * 2**20)
    users = {u: _sequence(rng, n) for u, n in ((1, 12), (2, 40), (3, 0), (4, 140))}  # 4: over max_len: slides
    weights = {"click": 1.0, "save": 1.0}
    for step in range(3):  # first full encodes, then hits and appended events (extend)
        if step == 2:
            users = {
                u: enc.UserSequence(
                    *(
                        np.concatenate([a, b])
                        for a, b in zip(
                            (s.item_ids, s.outcomes, s.surfaces, s.timestamps_us),
                            (
                                np.array([1100 + u]),
                                np.array([OUTCOME_CODE["click"]]),
                                np.array([0]),
                                np.array([T_US + 10**12 + u]),
                            ),
                        )
                    )
                )
                for u, s in users.items()
            }
        batch = loaded.recommend_batch(
            [RecommendRequest(s, 15, weights, u) for u, s in users.items()], states, n_candidates=N_CANDIDATES
        )
        for (_user, seq), got in zip(users.items(), batch):
            alone = loaded.recommend(seq, 15, weights, n_candidates=N_CANDIDATES)
            assert [r.item for r in got.items] == [r.item for r in alone.items]
            assert np.allclose([r.score for r in got.items], [r.score for r in alone.items], atol=1e-5)
            fresh = _fresh_ranking(loaded, seq, [r.item for r in got.items])
            assert np.allclose([[r.probabilities[o] for o in RANKED] for r in got.items], fresh, atol=1e-5)
    assert dict(states.kinds) == {"full": 3 + 2, "hit": 3, "extend": 2, "cold": 2}


def test_given_candidates_are_ranked_as_given_and_unknown_items_left_out():
    loaded = _loaded()
    seq = _sequence(np.random.default_rng(2), 20)
    given = [1005, 1200, 999_999, 1017, 1005, 1250]
    result = loaded.recommend(seq, 10, {"click": 1.0}, candidates=given)
    assert result.n_candidates == 4 and {r.item for r in result.items} == {1005, 1200, 1017, 1250}
    assert all(r.outcome is None and r.retrieval_score is None for r in result.items)
    assert [r.score for r in result.items] == sorted((r.score for r in result.items), reverse=True)


def test_a_version_without_a_ranking_head_orders_by_retrieval():
    loaded = _loaded(rank_outcomes=())
    seq = _sequence(np.random.default_rng(3), 20)
    result = loaded.recommend(seq, 25, None, n_candidates=N_CANDIDATES)
    assert result.ranked_by == "retrieval" and all(r.probabilities is None for r in result.items)
    assert [r.item for r in result.items] == [c.item for c in loaded.retrieve(seq, N_CANDIDATES).candidates][:25]
    given = loaded.recommend(seq, 3, {"click": 1.0}, candidates=[1001, 1002, 1003])
    assert len(given.items) == 3 and given.ranked_by == "retrieval"


# -------------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def service(s3_server, tmp_path_factory):
    registry = checked_registry(s3_server.settings().with_prefix(f"rec-{uuid.uuid4().hex[:8]}"))
    version, _ = publish_model(registry, "homefeed", tiny_model(seed=0, rank_outcomes=RANKED))
    registry.promote("homefeed", version)
    manager = VersionManager(
        registry, ["homefeed", "search"], tmp_path_factory.mktemp("rec") / "cache", poll_interval_s=3600
    )
    manager.refresh()
    app = create_app(
        manager,
        InMemoryFeatures(FEATURES),
        start_polling=False,
        max_body_bytes=8192,
        serving=ServingConfig(recommend_candidates=N_CANDIDATES),
    )
    with ServerThread(app) as server:
        yield server


def post(server, body=None, raw=None, path="/v1/recommend"):
    return call(server.host, server.port, "POST", path, body, raw=raw)


def test_recommend_endpoint_returns_the_top_k_with_probabilities_and_versions(service):
    status, body, headers = post(
        service, {"user_id": 7, "surface": "homefeed", "k": 12, "outcome_weights": {"click": 3, "save": 1}}
    )
    assert status == 200, body
    items = body["items"]
    assert len(items) == 12 and len({i["item_id"] for i in items}) == 12
    assert body["ranked_by"] == "ranking_head" and body["candidates_ranked"] == N_CANDIDATES
    assert not {i["item_id"] for i in items} & set(FEATURES[7]["seq_item_ids"])  # seen items left out
    for i in items:
        assert set(i["probabilities"]) == set(RANKED)
        assert i["score"] == pytest.approx(0.75 * i["probabilities"]["click"] + 0.25 * i["probabilities"]["save"])
        assert i["outcome"] in ("click", "save") and i["offset"] in ("next", "session", "day", "week")
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    stages = dict(part.strip().split(";dur=") for part in headers["server-timing"].split(","))
    assert set(stages) == {"queue", "feature", "encode", "ann", "rank", "merge", "total"}
    # given candidates, and the retrieval endpoint beside it, unchanged
    status, body, _ = post(service, {"user_id": 7, "surface": "homefeed", "k": 2, "candidates": [1010, 1020, 1030]})
    assert status == 200 and body["candidates_ranked"] == 3 and len(body["items"]) == 2
    status, body, _ = post(service, {"user_id": 7, "surface": "homefeed", "k": 5}, path="/v1/retrieve")
    assert status == 200 and len(body["candidates"]) == 5


def test_a_recommendation_encodes_the_history_once(service):
    """The ranking head reads the retrieval encode's keys/values: one encode per request (the
    encoder-state counter counts one per request, and the model FLOPs include one history)."""
    _, before, _ = call(service.host, service.port, "GET", "/metrics")
    status, _, _ = post(
        service,
        {
            "user_id": 12345,
            "surface": "homefeed",
            "k": 5,
            "recent_events": [{"item_id": 1001 + i, "outcome": "click", "timestamp_us": T_US + i} for i in range(6)],
        },
    )
    assert status == 200
    _, after, _ = call(service.host, service.port, "GET", "/metrics")

    def count(text, kind):
        line = [x for x in text.splitlines() if x.startswith(f'pinrec_encoder_state_requests_total{{kind="{kind}"}}')]
        return float(line[0].split()[-1]) if line else 0.0

    assert sum(count(after, k) - count(before, k) for k in ("cold", "hit", "extend", "full")) == 1
    assert count(after, "full") - count(before, "full") == 1

    def recommend_counts(text):  # the service's counters are shared by the module's tests (any order)
        prefix = 'pinrec_requests_total{endpoint="recommend"'
        lines = [x.rsplit(" ", 1) for x in text.splitlines() if x.startswith(prefix)]
        return {labels: float(value) for labels, value in lines}

    counted_before, counted_after = recommend_counts(before), recommend_counts(after)
    new = {k: v - counted_before.get(k, 0.0) for k, v in counted_after.items() if v != counted_before.get(k, 0.0)}
    assert len(new) == 1 and 'status="200"' in next(iter(new)) and list(new.values()) == [1.0], new


BAD_REQUESTS = [
    *BAD_REQUESTS_OF_EVERY_ENDPOINT,
    (
        "weight over the bound",
        {"user_id": 1, "surface": "homefeed", "outcome_weights": {"click": 1e307}},
        422,
        "outcome_weights",
    ),
    ("empty candidates", {"user_id": 1, "surface": "homefeed", "candidates": []}, 422, "candidates"),
    ("negative candidate", {"user_id": 1, "surface": "homefeed", "candidates": [-4]}, 422, "candidates"),
    ("too many candidates", {"user_id": 1, "surface": "homefeed", "candidates": list(range(1001))}, 422, "candidates"),
    ("candidate not an id", {"user_id": 1, "surface": "homefeed", "candidates": ["x"]}, 422, "candidates"),
    ("surface without a champion", {"user_id": 1, "surface": "search"}, 503, "no version"),
]


@pytest.mark.parametrize("case,body,status,reason", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_recommend_requests_get_a_4xx_or_503_with_the_reason(service, case, body, status, reason):
    got, payload, _ = post(service, body)
    assert got == status, payload
    assert reason in json.dumps(payload)


def test_malformed_and_oversized_recommend_bodies_get_4xx(service):
    status, body, _ = post(service, raw=b"{not json")
    assert status == 422 and body["error"]
    status, body, _ = post(
        service, {"user_id": 1, "surface": "homefeed", "candidates": list(range(10**9, 10**9 + 1000))}
    )
    assert status == 413 and "bytes" in body["error"]
