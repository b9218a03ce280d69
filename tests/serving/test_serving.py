"""The retrieval service: API shape, bad input, readiness, metrics, canary routing, and version
swaps against a real SeaweedFS with real uvicorn servers."""

import json
import os
import threading
import uuid
from pathlib import Path

import pytest

from devstack.processes import stop_process_group, wait_until
from devstack.service import ServerThread, call, start_cli_service
from events.contract import OUTCOME_CODE, SURFACE_CODE
from serving.registry.manifest import INDEX_FILE, IntegrityError
from serving.registry.publish import publish_model
from serving.service.app import create_app
from serving.service.checks import checked_registry
from serving.service.features import InMemoryFeatures
from serving.service.versions import VersionManager, canary_fraction
from storage.s3 import put_bytes
from tests.helpers import BAD_REQUESTS_OF_EVERY_ENDPOINT, tiny_model

ROOT = Path(__file__).resolve().parents[2]
T_US = 1_767_000_000_000_000
SEEN = [1001, 1002, 1003, 1004]
FEATURES = {
    7: {
        "seq_item_ids": SEEN,
        "seq_outcomes": [OUTCOME_CODE["click"]] * 3 + [OUTCOME_CODE["hide"]],
        "seq_surfaces": [SURFACE_CODE["homefeed"]] * 4,
        "seq_timestamps_us": [T_US + i * 60_000_000 for i in range(4)],
        "seq_length": 4,
    },
}


@pytest.fixture(scope="module")
def world(s3_server, tmp_path_factory):
    """Two published versions of homefeed (v1 champion), one model each."""
    registry = checked_registry(s3_server.settings().with_prefix(f"srv-{uuid.uuid4().hex[:8]}"))
    v1, _ = publish_model(registry, "homefeed", tiny_model(seed=0), data_partitions=["2026-01-01"])
    v2, _ = publish_model(registry, "homefeed", tiny_model(seed=1), parents=[v1])
    registry.promote("homefeed", v1)
    return {"registry": registry, "v1": v1, "v2": v2, "tmp": tmp_path_factory.mktemp("serving")}


@pytest.fixture(scope="module")
def service(world):
    manager = VersionManager(world["registry"], ["homefeed", "search"], world["tmp"] / "cache-a", poll_interval_s=3600)
    manager.refresh()
    app = create_app(manager, InMemoryFeatures(FEATURES), start_polling=False, max_body_bytes=4096)
    with ServerThread(app) as server:
        yield server


def post(server, body=None, raw=None):
    return call(server.host, server.port, "POST", "/v1/retrieve", body, raw=raw)


def test_retrieve_returns_k_unique_candidates_with_outcome_offset_and_versions(service, world):
    status, body, headers = post(
        service, {"user_id": 7, "surface": "homefeed", "k": 20, "outcome_weights": {"click": 2, "save": 1}}
    )
    assert status == 200, body
    cands = body["candidates"]
    assert len(cands) == 20 and len({c["item_id"] for c in cands}) == 20
    assert {c["outcome"] for c in cands} == {"click", "save"}
    assert {c["offset"] for c in cands} <= {"next", "session", "day", "week"}
    assert [c["score"] for c in cands] == sorted((c["score"] for c in cands), reverse=True)
    assert body["version"] == world["v1"] and body["served_by"] == "champion"
    assert body["model_version"].startswith(world["v1"] + "/model-")
    assert body["index_version"].startswith(world["v1"] + "/index-")
    stages = dict(part.strip().split(";dur=") for part in headers["server-timing"].split(","))
    assert set(stages) == {"queue", "feature", "encode", "ann", "merge", "total"}
    assert int(headers["x-batch-size"]) >= 1


def test_seen_items_are_never_returned(service):
    _, body, _ = post(service, {"user_id": 7, "surface": "homefeed", "k": 300})
    returned = {c["item_id"] for c in body["candidates"]}
    assert returned and not returned & set(SEEN)
    assert len(returned) == 300 - len(SEEN)  # the whole catalogue minus what the user saw


def test_recent_events_serve_a_cold_user_and_count_as_seen(service):
    events = [{"item_id": 1010 + i, "outcome": "save", "timestamp_us": T_US + i} for i in range(5)]
    _, cold, _ = post(service, {"user_id": 99, "surface": "homefeed", "k": 50})
    status, warm, _ = post(service, {"user_id": 99, "surface": "homefeed", "k": 50, "recent_events": events})
    assert status == 200 and len(warm["candidates"]) == 50
    assert not {c["item_id"] for c in warm["candidates"]} & {e["item_id"] for e in events}
    assert [c["item_id"] for c in warm["candidates"]] != [c["item_id"] for c in cold["candidates"]]


BAD_REQUESTS = [
    *BAD_REQUESTS_OF_EVERY_ENDPOINT,
    (
        "negative weight",
        {"user_id": 1, "surface": "homefeed", "outcome_weights": {"click": -1}},
        422,
        "greater than or equal to 0",
    ),
    (
        "unknown outcome in event",
        {"user_id": 1, "surface": "homefeed", "recent_events": [{"item_id": 1, "outcome": "like", "timestamp_us": 1}]},
        422,
        "unknown outcome",
    ),
    ("missing user", {"surface": "homefeed"}, 422, "user_id"),
    ("negative user", {"user_id": -3, "surface": "homefeed"}, 422, "user_id"),
]


@pytest.mark.parametrize("case,body,status,reason", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_with_the_reason(service, case, body, status, reason):
    got, payload, _ = post(service, body)
    assert got == status, payload
    assert reason in json.dumps(payload)


@pytest.mark.parametrize(
    "weights,status",
    [
        ({"click": 1e307}, 422),  # over the bound: a 4xx naming it, not a 500
        ({"click": 1e308, "save": 1e308}, 422),
        ({"click": 1e6, "save": 1e6}, 200),  # at the bound
        ({"click": 5e-324, "save": 5e-324}, 200),  # subnormal but > 0
        ({"click": 1e-300, "save": 1.0}, 200),
    ],
    ids=["1e307", "two-1e308", "at-bound", "subnormal", "tiny-beside-one"],
)
def test_extreme_outcome_weights_are_bounded_or_served_never_a_500(service, weights, status):
    got, payload, _ = post(service, {"user_id": 1, "surface": "homefeed", "outcome_weights": weights})
    assert got == status, payload
    if status == 422:
        assert "outcome_weights" in payload["error"] and "1000000" in payload["error"]
    else:
        assert len(payload["candidates"]) == 100


def test_an_unexpected_error_is_a_logged_500_without_internals(world, caplog):
    """Any exception the handlers do not expect: a JSON 500 that says nothing about the inside
    (no message, path, endpoint or traceback), counted in the metrics and logged in full."""
    manager = VersionManager(world["registry"], ["homefeed"], world["tmp"] / "cache-boom", poll_interval_s=3600)
    manager.refresh()
    secret = "boom at s3://pinrec/pinrec-ops/versions/x and /var/secret/path"

    def explode(*_args, **_kwargs):
        raise RuntimeError(secret)

    manager.state("homefeed").champion.retrieve_batch = explode  # what the service calls
    with (
        ServerThread(create_app(manager, None, start_polling=False)) as server,
        caplog.at_level("ERROR", logger="serving.service.app"),
    ):
        status, body, _ = post(server, {"user_id": 1, "surface": "homefeed", "k": 5})
        metrics = call(server.host, server.port, "GET", "/metrics")[1]
    assert status == 500 and body == {"error": "internal error"}
    assert 'pinrec_requests_total{endpoint="retrieve",status="500"' in metrics
    assert secret in caplog.text and "Traceback" in caplog.text


def test_malformed_json_and_oversized_payloads_get_4xx(service):
    status, payload, _ = post(service, raw=b'{"user_id": 1, "surface": ')
    assert status == 422 and "JSON" in payload["error"]
    events = [{"item_id": i, "outcome": "click", "timestamp_us": i} for i in range(150)]
    status, payload, _ = post(service, {"user_id": 1, "surface": "homefeed", "recent_events": events})
    assert status == 413 and "4096 bytes" in payload["error"]


def test_surface_without_a_champion_is_503_and_only_that_surface_is_unready(service):
    status, payload, _ = post(service, {"user_id": 1, "surface": "search"})
    assert status == 503 and "no version" in payload["error"]
    status, ready, _ = call(service.host, service.port, "GET", "/readyz")
    assert status == 200 and ready["surfaces"] == {"homefeed": True, "search": False}
    assert call(service.host, service.port, "GET", "/readyz/search")[0] == 503


def test_metrics_count_requests_by_status_and_version(service, world):
    post(service, {"user_id": 7, "surface": "homefeed", "k": 5})
    post(service, {"user_id": 7, "surface": "homefeed", "k": 0})
    status, text, _ = call(service.host, service.port, "GET", "/metrics")
    assert status == 200
    assert f'pinrec_requests_total{{endpoint="retrieve",status="200",version="{world["v1"]}"}}' in text
    assert 'pinrec_requests_total{endpoint="retrieve",status="422",version="none"}' in text
    assert 'pinrec_request_duration_seconds_bucket{endpoint="retrieve"' in text
    assert 'pinrec_stage_duration_seconds_count{stage="ann"}' in text
    assert f'pinrec_loaded_version{{role="champion",surface="homefeed",version="{world["v1"]}"}} 1.0' in text


def test_openapi_spec_describes_the_retrieve_endpoint(service):
    status, spec, _ = call(service.host, service.port, "GET", "/openapi.json")
    assert status == 200 and "/v1/retrieve" in spec["paths"]
    assert {"user_id", "surface", "k", "outcome_weights", "recent_events"} <= set(
        spec["components"]["schemas"]["RetrieveRequest"]["properties"]
    )


def test_readyz_waits_for_a_verified_version(world):
    manager = VersionManager(world["registry"], ["homefeed"], world["tmp"] / "cache-b")
    app = create_app(manager, None, start_polling=False)
    with ServerThread(app) as server:
        assert call(server.host, server.port, "GET", "/healthz")[0] == 200
        assert call(server.host, server.port, "GET", "/readyz")[0] == 503
        manager.refresh()
        status, body, _ = call(server.host, server.port, "GET", "/readyz")
        assert status == 200 and body["versions"]["homefeed"]["champion"] == world["v1"]


def test_corrupted_new_version_is_rejected_and_the_old_one_keeps_serving(s3_server, world):
    registry = checked_registry(s3_server.settings().with_prefix(f"bad-{uuid.uuid4().hex[:8]}"))
    good, _ = publish_model(registry, "homefeed", tiny_model(seed=0))
    bad, _ = publish_model(registry, "homefeed", tiny_model(seed=2))
    key = registry.version_key("homefeed", bad, INDEX_FILE)
    blob = registry.client.get_object(Bucket=registry.bucket, Key=key)["Body"].read()
    put_bytes(registry.client, registry.bucket, key, blob[:-1] + bytes([blob[-1] ^ 1]))
    registry.promote("homefeed", good)
    manager = VersionManager(registry, ["homefeed"], world["tmp"] / "cache-c")
    manager.refresh()
    with pytest.raises(IntegrityError):
        registry.promote("homefeed", bad)  # promotion fetches it first and refuses ...
    registry.promote("homefeed", bad, check=False)  # ... so name it past the check (an old tool)
    manager.refresh()
    assert manager.state("homefeed").champion.version == good
    assert manager.errors["homefeed"]["version"] == bad
    assert "IntegrityError" in manager.errors["homefeed"]["error"]
    assert manager.load_counts[("homefeed", "error")] == 1
    app = create_app(manager, None, start_polling=False)
    with ServerThread(app) as server:
        status, body, _ = post(server, {"user_id": 3, "surface": "homefeed", "k": 5})
        assert status == 200 and body["version"] == good
        metrics = call(server.host, server.port, "GET", "/metrics")[1]
        assert 'pinrec_version_loads_total{result="error",surface="homefeed"} 1.0' in metrics


def test_versions_reports_errors_without_endpoints_keys_or_local_paths(world, tmp_path):
    """/versions says which version failed and why in words; the S3 endpoint, object keys,
    prefix and local paths stay in the log."""
    from devstack.processes import free_port
    from storage.s3 import S3Settings, make_client

    unreachable = S3Settings(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        bucket="secret-bucket",
        prefix="secret-prefix",
        access_key="k",
        secret_key="s",
    )
    down = checked_registry(unreachable, make_client(unreachable, max_attempts=1, connect_timeout=1))
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache should be")
    managers = [
        VersionManager(down, ["homefeed"], tmp_path / "cache", poll_interval_s=3600),
        VersionManager(world["registry"], ["homefeed"], blocked, poll_interval_s=3600),
    ]
    for manager in managers:
        manager.refresh()
        assert manager.errors["homefeed"]
        with ServerThread(create_app(manager, None, start_polling=False)) as server:
            status, body, _ = call(server.host, server.port, "GET", "/versions")
        text = json.dumps(body)
        assert status == 200 and body["errors"]["homefeed"]["error"]
        for secret in (
            unreachable.endpoint_url,
            "127.0.0.1",
            "secret-bucket",
            "secret-prefix",
            "s3://",
            str(tmp_path),
            world["registry"].settings.prefix,
            "/",
        ):
            assert secret not in text.replace(body["errors"]["homefeed"].get("version") or "-", ""), (secret, text)


def test_canary_serves_the_hashed_fraction_of_users(s3_server, world):
    registry = world["registry"]
    manager = VersionManager(registry, ["homefeed"], world["tmp"] / "cache-d")
    registry.set_canary("homefeed", world["v2"], 0.3)
    try:
        manager.refresh()
        app = create_app(manager, None, start_polling=False)
        with ServerThread(app) as server:
            served = {}
            for user in range(60):
                _, body, _ = post(server, {"user_id": user, "surface": "homefeed", "k": 3})
                served[user] = (body["served_by"], body["version"])
        expected = {u: canary_fraction("homefeed", u) < 0.3 for u in range(60)}
        assert all((role == "canary") == expected[u] for u, (role, _) in served.items())
        assert all(v == (world["v2"] if role == "canary" else world["v1"]) for role, v in served.values())
        assert 5 <= sum(expected.values()) <= 35
    finally:
        registry.clear_canary("homefeed")


def test_cli_service_swaps_versions_under_concurrent_load_without_a_failed_request(s3_server, world, tmp_path):
    registry = checked_registry(s3_server.settings().with_prefix(f"swap-{uuid.uuid4().hex[:8]}"))
    v1, _ = publish_model(registry, "homefeed", tiny_model(seed=0))
    v2, _ = publish_model(registry, "homefeed", tiny_model(seed=1))
    registry.promote("homefeed", v1)
    env = {**os.environ, **s3_server.env(), "PINREC_S3_PREFIX": registry.settings.prefix}
    proc, port = start_cli_service(
        env,
        ["homefeed"],
        tmp_path / "cache",
        "--features",
        "none",
        "--poll-interval",
        "0.2",
        "--log-level",
        "warning",
        ready_timeout=60,
    )
    try:
        results, stop = [], threading.Event()

        def client(worker):
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                try:
                    status, body, _ = call(
                        "127.0.0.1",
                        port,
                        "POST",
                        "/v1/retrieve",
                        {"user_id": worker, "surface": "homefeed", "k": 10},
                        conn=conn,
                    )
                    results.append((status, body.get("version") if isinstance(body, dict) else None))
                except Exception as exc:  # a dropped connection is a failed request
                    results.append((type(exc).__name__, None))
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(results) >= 20, timeout=30)
        registry.promote("homefeed", v2)
        swapped = wait_until(lambda: any(v == v2 for _, v in results[-5:]), timeout=30)
        n_at_swap = len(results)
        wait_until(lambda: len(results) >= n_at_swap + 20, timeout=30)
        stop.set()
        for t in threads:
            t.join()
        assert swapped
        failures = [r for r in results if r[0] != 200]
        assert failures == [] and len(results) >= 40
        versions = [v for _, v in results]
        assert versions[0] == v1 and versions[-1] == v2
        status, text, _ = call("127.0.0.1", port, "GET", "/metrics")
        assert f'version="{v2}"' in text and 'status="500"' not in text
    finally:
        stop_process_group(proc, timeout=20)


def _ready(port):
    try:
        return call("127.0.0.1", port, "GET", "/readyz", timeout=2)[0] == 200
    except OSError:
        return False


def test_inline_mode_serves_the_same_candidates_as_the_thread_pool(service, world):
    manager = VersionManager(world["registry"], ["homefeed"], world["tmp"] / "cache-e")
    manager.refresh()
    request = {"user_id": 7, "surface": "homefeed", "k": 30}
    with ServerThread(create_app(manager, InMemoryFeatures(FEATURES), start_polling=False, inline=True)) as inline:
        status, got, _ = post(inline, request)
    assert status == 200
    assert got["candidates"] == post(service, request)[1]["candidates"]
