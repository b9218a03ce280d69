"""Micro-batched, incremental serving: a batch answers what one request at a time answers, an
incremental encode what a full encode gives, the wait bound holds, a version swap drops the
encoder states and loses no request under concurrent load."""

import json
import re
import threading
import time
import uuid

import numpy as np
import pytest
import torch

from benchmarks.loadgen import closed_loop
from devstack.service import ServerThread, call
from serving.registry.index import build_tuned_index
from serving.registry.publish import publish_model
from serving.service import encoder as enc
from serving.service import retriever
from serving.service.app import create_app
from serving.service.batcher import MicroBatcher
from serving.service.checks import checked_registry
from serving.service.encoder_state import EncoderStateCache
from serving.service.retriever import LoadedVersion, RetrievalRequest
from serving.service.service import ServingConfig
from serving.service.versions import VersionManager
from tests.helpers import tiny_model
from training.merge import merge_by_budget

T_US = 1_767_000_000_000_000


def _loaded(version="v1") -> LoadedVersion:
    model = tiny_model()
    with torch.no_grad():  # a random head barely tells offsets apart: near-tied scores across queries
        model.head_offset.weight.mul_(50.0)  # would make the (outcome, offset) label of an item a coin flip
        model.head_outcome.weight.mul_(50.0)
    vectors, ids = enc.item_table(model)
    index, _ = build_tuned_index(vectors)
    files = {"model.pt": {"sha256": "0" * 64}, "index.faiss": {"sha256": "1" * 64}}
    return LoadedVersion("homefeed", version, {"files": files}, model, index, ids)


def _sequence(rng, n: int, t0: int = T_US) -> enc.UserSequence:
    """n events over the tiny model's items (ids 1001..1300), engaged and not."""
    from events.contract import OUTCOME_CODE

    codes = [OUTCOME_CODE[o] for o in ("click", "save", "hide", "impression")]
    return enc.UserSequence(
        rng.integers(1001, 1301, n),
        rng.choice(codes, n),
        rng.integers(0, 3, n),
        t0 + np.cumsum(rng.integers(1, 10**8, n)),
    )


def _prefix(seq: enc.UserSequence, n: int) -> enc.UserSequence:
    return enc.UserSequence(seq.item_ids[:n], seq.outcomes[:n], seq.surfaces[:n], seq.timestamps_us[:n])


def _reference(loaded: LoadedVersion, seq, k, weights=None):
    """One request the plain way: a full encode, one search, merge_by_budget."""
    weights = dict(weights or loaded.default_outcome_weights)
    budget = loaded.encoder.budget(weights)
    queries = loaded.encoder.queries(seq, budget)
    seen = np.unique(seq.item_ids)
    scores, rows = loaded.index.search(queries, int(min(loaded.index.ntotal, k + len(seen))))
    ids = np.where(rows >= 0, loaded.item_ids[np.maximum(rows, 0)], -1)
    lists = []
    for q, (outcome, offset) in enumerate(budget):
        keep = (rows[q] >= 0) & ~np.isin(ids[q], seen)
        lists.append((outcome, offset, ids[q][keep][:k].tolist(), scores[q][keep][:k].tolist()))
    return merge_by_budget(lists, weights, k)


def _same(got, want):
    assert [c.item for c in got] == [c.item for c in want]
    assert [(c.outcome, c.offset) for c in got] == [(c.outcome, c.offset) for c in want]
    assert np.allclose([c.score for c in got], [c.score for c in want], atol=1e-5)


@pytest.mark.parametrize("seen_margin", [retriever.SEEN_MARGIN, 0])
def test_a_batch_of_requests_answers_what_each_request_answers_alone(monkeypatch, seen_margin):
    # seen_margin 0: any seen item among a query's top k sends it to the second search
    monkeypatch.setattr(retriever, "SEEN_MARGIN", seen_margin)
    loaded = _loaded()
    rng = np.random.default_rng(0)
    requests = [
        RetrievalRequest(_sequence(rng, n), k, w, user)
        for user, (n, k, w) in enumerate(
            [
                (0, 20, None),
                (3, 50, {"click": 2, "save": 1}),
                (40, 7, {"save": 1}),
                (90, 100, None),
                (12, 1, {"click": 1, "hide": 0.5}),
                (60, 150, None),
            ]
        )
    ]
    states = EncoderStateCache(10**8)
    for _ in range(2):  # cold states, then every user's state cached
        batch = loaded.retrieve_batch(requests, states)
        for r, got in zip(requests, batch):
            _same(got.candidates, _reference(loaded, r.sequence, r.k, r.outcome_weights))
            assert got.batch_size == len(requests)
    assert states.kinds["full"] == 5 and states.kinds["hit"] == 5 and states.kinds["cold"] == 2
    if seen_margin == 0:
        assert loaded.searches_again > 0  # the second search ran, and changed no answer


def test_incremental_encoding_equals_a_full_encode_across_appends_and_the_window_sliding():
    loaded = _loaded()  # max_len 50
    rng = np.random.default_rng(1)
    history = _sequence(rng, 160)
    states = EncoderStateCache(10**8)
    kinds = []
    for n in (5, 6, 9, 20, 20, 45, 47, 60, 61, 61, 160):  # appends of 1..25 events, then past max_len
        seq = _prefix(history, n)
        window = loaded.encoder.window(seq)
        past = states.get(loaded.state_key, 7)
        h, new, kind, _ = loaded.encoder.encode_last([window], [past])
        states.put(loaded.state_key, 7, new[0])
        kinds.append(kind[0])
        with torch.inference_mode():
            want = loaded.model.last_hidden(loaded.encoder.batch(seq))[0]
        assert torch.allclose(h[0], want, atol=1e-5), (n, kind)
        got = loaded.retrieve_batch([RetrievalRequest(seq, 30, None, 7)], states)[0].candidates
        _same(got, _reference(loaded, seq, 30))
    assert "extend" in kinds and "hit" in kinds
    assert len(loaded.encoder.window(history)) == 50
    # once the history is longer than max_len the window slides: encoded again in full
    assert kinds[-1] == "full"


def test_encoder_states_stay_under_their_byte_cap_least_recently_used_out():
    loaded = _loaded()
    rng = np.random.default_rng(2)
    probe = EncoderStateCache(10**8)
    loaded.retrieve_batch([RetrievalRequest(_sequence(rng, 60), 5, None, 0)], probe)
    size = probe.nbytes
    states = EncoderStateCache(int(size * 3.5))
    for user in range(6):
        loaded.retrieve_batch([RetrievalRequest(_sequence(rng, 60), 5, None, user)], states)
    assert len(states) == 3 and states.nbytes <= states.max_bytes and states.evictions == 3
    assert states.get(loaded.state_key, 0) is None and states.get(loaded.state_key, 5) is not None


def test_the_batcher_never_holds_a_request_longer_than_the_wait_bound():
    batches = []

    def process(jobs):
        batches.append([(j.enqueued, j.started) for j in jobs])
        time.sleep(0.003)  # a batch takes 3 ms: requests every 1 ms are concurrent ones
        return [None] * len(jobs)

    # a steady stream (a request every ~1 ms) that would keep a batch open forever without the bound
    batcher = MicroBatcher(process, max_wait_ms=5.0, max_batch=10_000)
    done = threading.Semaphore(0)
    try:
        for _ in range(150):
            batcher.submit(None, lambda _: done.release())
            time.sleep(0.001)
        for _ in range(150):
            assert done.acquire(timeout=10)
    finally:
        batcher.stop()
    waits = [started - enqueued for batch in batches for enqueued, started in batch]
    assert len(waits) == 150
    assert max(waits) <= 0.005 + 0.025  # the bound, plus scheduling slack on a shared machine
    assert max(len(b) for b in batches) > 1  # it did gather batches


def test_one_client_waiting_for_each_answer_is_not_held_for_the_batch_wait():
    # closed loop, one client: the next request comes right after each answer, faster than the
    # wait bound, but never while a batch is being served: nothing to gather
    batcher = MicroBatcher(lambda jobs: (time.sleep(0.001), [None] * len(jobs))[1], max_wait_ms=20.0)
    waits = []
    try:
        for _ in range(50):
            event = threading.Event()
            job = batcher.submit(None, lambda _: event.set())
            assert event.wait(5)
            waits.append(job.started - job.enqueued)
    finally:
        batcher.stop()
    assert sorted(waits)[25] < 0.005  # not the 20 ms bound


def test_a_lone_request_is_not_held_for_the_batch_wait():
    batcher = MicroBatcher(lambda jobs: [time.perf_counter()] * len(jobs), max_wait_ms=200.0)
    try:
        waits = []
        for _ in range(5):
            got = []
            event = threading.Event()
            job = batcher.submit(None, lambda r: (got.append(r), event.set()))
            assert event.wait(5)
            waits.append(got[0] - job.enqueued)
            time.sleep(0.3)  # requests far apart: nothing to wait for
    finally:
        batcher.stop()
    assert sorted(waits)[2] < 0.05  # not 0.2 s


def test_an_error_in_a_batch_reaches_its_requests_and_the_worker_goes_on():
    calls = []

    def process(jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise ValueError("boom")
        return ["ok"] * len(jobs)

    batcher = MicroBatcher(process, max_wait_ms=0.0)
    try:
        results = []
        for _ in range(2):
            event = threading.Event()
            batcher.submit(None, lambda r: (results.append(r), event.set()))
            assert event.wait(5)
    finally:
        batcher.stop()
    assert isinstance(results[0], ValueError) and results[1] == "ok"


@pytest.fixture(scope="module")
def two_versions(s3_server):
    registry = checked_registry(s3_server.settings().with_prefix(f"batch-{uuid.uuid4().hex[:8]}"))
    v1, _ = publish_model(registry, "homefeed", tiny_model(seed=0))
    v2, _ = publish_model(registry, "homefeed", tiny_model(seed=1))
    return registry, v1, v2


def _bodies(n_users: int, n_events: int = 30) -> list[bytes]:
    rng = np.random.default_rng(3)
    bodies = []
    for user in range(n_users):
        events = [
            {"item_id": int(i), "outcome": "click" if j % 3 else "save", "timestamp_us": T_US + j * 10**7}
            for j, i in enumerate(rng.integers(1001, 1301, n_events))
        ]
        bodies.append(json.dumps({"user_id": user, "surface": "homefeed", "k": 20, "recent_events": events}).encode())
    return bodies


def test_concurrent_requests_are_batched_and_answer_as_inline_requests_do(two_versions, tmp_path):
    registry, v1, _ = two_versions
    registry.promote("homefeed", v1)
    manager = VersionManager(registry, ["homefeed"], tmp_path / "cache")
    manager.refresh()
    bodies = _bodies(24)
    with ServerThread(create_app(manager, None, start_polling=False, inline=True)) as inline:
        alone = closed_loop(inline.host, inline.port, bodies, 1, requests=len(bodies))
    app = create_app(manager, None, start_polling=False, serving=ServingConfig(max_wait_ms=20.0))
    with ServerThread(app) as server:
        together = closed_loop(server.host, server.port, bodies, 8, requests=len(bodies))
        metrics = call(server.host, server.port, "GET", "/metrics")[1]
    assert all(r.status == 200 for r in alone.replies + together.replies)
    assert f"pinrec_batch_size_count {len(bodies)}.0" in metrics
    assert 'pinrec_stage_duration_seconds_count{stage="queue"}' in metrics
    flops = float(re.search(r"pinrec_model_flops_per_request_sum ([0-9.e+]+)", metrics).group(1))
    # every request counted once by how its user's state was found (full, extended or reused: a
    # test run before this one may have left these users' states in the version's cache)
    kinds = re.findall(r'pinrec_encoder_state_requests_total\{kind="(\w+)"\} ([0-9.]+)', metrics)
    assert flops > 0 and sum(float(n) for _, n in kinds) == len(bodies), kinds
    assert max(int(r.headers["x-batch-size"]) for r in together.replies) > 1
    by_user = {json.loads(r.body)["user_id"]: json.loads(r.body)["candidates"] for r in alone.replies}
    for reply in together.replies:
        body = json.loads(reply.body)
        want = by_user[body["user_id"]]
        assert [c["item_id"] for c in body["candidates"]] == [c["item_id"] for c in want]
        assert np.allclose([c["score"] for c in body["candidates"]], [c["score"] for c in want], atol=1e-5)


def test_a_swap_under_concurrent_load_drops_the_encoder_states_and_loses_no_request(two_versions, tmp_path):
    registry, v1, v2 = two_versions
    registry.promote("homefeed", v1)
    manager = VersionManager(registry, ["homefeed"], tmp_path / "cache", poll_interval_s=0.1)
    manager.refresh()
    app = create_app(manager, None, start_polling=True, serving=ServingConfig(max_wait_ms=2.0))
    service = app.state.service
    bodies = _bodies(40)
    old = manager.state("homefeed").champion
    with ServerThread(app) as server:
        closed_loop(server.host, server.port, bodies, 4, requests=len(bodies))  # every user's state
        assert len(service.states) == 40 and service.states.versions() == {old.state_key}
        result = closed_loop(
            server.host, server.port, bodies, 8, seconds=4.0, at=[(1.0, lambda: registry.promote("homefeed", v2))]
        )
        new = manager.state("homefeed").champion
    versions = [json.loads(r.body)["version"] if r.status == 200 else r.error or r.status for r in result.replies]
    assert set(versions) == {v1, v2}  # every request answered 200 by one version or the other
    assert versions.index(v2) > 0 and versions[-1] == v2
    assert new.version == v2 and service.states.versions() == {new.state_key}  # v1's states dropped
    assert len(service.states) == 40
    service.states.put(old.state_key, 0, service.states.get(new.state_key, 0))
    assert service.states.versions() == {new.state_key}  # a late request on v1 stores nothing
