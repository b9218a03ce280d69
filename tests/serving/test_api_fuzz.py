"""The serving API fuzzed from its own OpenAPI spec (schemathesis): valid and invalid requests
generated from `/openapi.json` (surface and outcome names narrowed to the contract's vocabulary
so that valid requests reach retrieval and ranking), sent over HTTP to the app serving a real
published version with a ranking head (`/v1/retrieve` and `/v1/recommend` alike). No response is a 5xx, and every
4xx body says why (a non-empty `error`). Weight maps
(`outcome_weights`) are generated over the known outcomes, so valid maps, huge and tiny weights
included, reach the budget split."""

import copy
import math
import uuid
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from devstack.service import ServerThread, call
from events.contract import OUTCOMES, SURFACES, EventCodes
from serving.registry.publish import publish_model
from serving.service.app import create_app
from serving.service.checks import checked_registry
from serving.service.features import InMemoryFeatures
from serving.service.schemas import MAX_OUTCOME_WEIGHT
from serving.service.versions import VersionManager
from storage.s3 import S3Settings
from tests.helpers import tiny_model

MAX_EXAMPLES = 100  # per operation; bounds the module (about 60 s of fuzzing at load 7 on 2 cores)


def _service_spec() -> dict:
    """The service's OpenAPI document, from an app that is never started (nothing is contacted).
    schemathesis' lazy `from_fixture` loader does not run under pytest 9, so the schema is built
    at import and the generated requests go to the served app of the `service` fixture."""
    idle = VersionManager(checked_registry(S3Settings(endpoint_url="http://127.0.0.1:9")), ["homefeed"], "unused")
    return create_app(idle, start_polling=False).openapi()


def _known_vocabularies(spec: dict) -> dict:
    """The spec with every `surface` and `outcome` string narrowed to the contract's vocabulary,
    and `outcome_weights` maps to the contract's outcomes with at least one entry. The published
    spec types them as free strings (validators check them), so almost no generated "valid"
    request would reach retrieval, and a weight map would almost never name a known outcome;
    negative cases still send unknown names and out-of-range weights."""
    spec = copy.deepcopy(spec)
    for model in spec["components"]["schemas"].values():
        for field, vocabulary in (("surface", SURFACES), ("outcome", OUTCOMES)):
            prop = model.get("properties", {}).get(field)
            for option in [prop] if prop and "type" in prop else (prop or {}).get("anyOf", []):
                if option.get("type") == "string":
                    option["enum"] = list(vocabulary)
        weights = model.get("properties", {}).get("outcome_weights")
        for option in (weights or {}).get("anyOf", []):
            if option.get("type") == "object":
                option["propertyNames"] = {"enum": list(EventCodes().engaged)}
                option["minProperties"] = 1
    return spec


SPEC = _service_spec()
STATUSES: Counter = Counter()  # (method path, status class) of every fuzzed call in this module
WEIGHTED: Counter = Counter()  # status class of retrievals that sent a weight map with a weight > 0
RAN: set[str] = set()  # which fuzz tests ran ("spec", "weights"): the module's closing check reads it
schema = schemathesis.openapi.from_dict(_known_vocabularies(SPEC))


@pytest.fixture(scope="module")
def service(s3_server, tmp_path_factory):
    """The app serving a real published champion, under uvicorn on 127.0.0.1."""
    registry = checked_registry(s3_server.settings().with_prefix(f"fuzz-{uuid.uuid4().hex[:8]}"))
    version, _ = publish_model(registry, "homefeed", tiny_model(seed=0, rank_outcomes=("click", "save", "hide")))
    registry.promote("homefeed", version)
    manager = VersionManager(registry, ["homefeed"], tmp_path_factory.mktemp("fuzz") / "cache", poll_interval_s=3600)
    manager.refresh()
    assert manager.ready
    features = InMemoryFeatures(
        {
            7: {
                "seq_item_ids": [1001, 1002],
                "seq_outcomes": [1, 2],
                "seq_surfaces": [0, 0],
                "seq_timestamps_us": [1, 2],
                "seq_length": 2,
            }
        }
    )
    with ServerThread(create_app(manager, features, start_polling=False)) as server:
        yield server


def test_the_fuzzed_spec_is_the_one_the_service_publishes(service):
    status, served, _ = call(service.host, service.port, "GET", "/openapi.json")
    assert status == 200 and served == SPEC
    assert "/v1/retrieve" in SPEC["paths"] and "/v1/recommend" in SPEC["paths"]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_rejection_says_why(case, service):
    RAN.add("spec")
    response = case.call(base_url=service.url)
    STATUSES[(f"{case.method} {case.path}", f"{response.status_code // 100}xx")] += 1
    weights = case.body.get("outcome_weights") if isinstance(case.body, dict) else None
    if isinstance(weights, dict) and any(isinstance(w, (int, float)) and w > 0 for w in weights.values()):
        WEIGHTED[f"{response.status_code // 100}xx"] += 1
    case.validate_response(response, checks=[not_a_server_error])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and str(body.get("error") or "").strip(), (
            f"{case.method} {case.path} -> {response.status_code} without a reason: {response.text}"
        )


# any finite weight (the extremes: 0, subnormals, 1.8e308) or one inside the accepted range, so
# that every run sends maps that must be served as well as maps that must be refused
WEIGHT_MAPS = st.dictionaries(
    st.sampled_from(OUTCOMES),
    st.one_of(
        st.floats(min_value=0, allow_nan=False, allow_infinity=False),
        st.floats(min_value=1e-3, max_value=MAX_OUTCOME_WEIGHT),
    ),
    min_size=1,
    max_size=len(OUTCOMES),
)


@given(weights=WEIGHT_MAPS, k=st.integers(1, 1000), path=st.sampled_from(["/v1/retrieve", "/v1/recommend"]))
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_finite_weight_map_is_served_or_refused_with_its_reason(service, weights, k, path):
    """Weight maps over the known outcomes with any finite weights (hypothesis goes for the
    extremes: 0, subnormals, 1.8e308): a 200 with at most k candidates (ranked items), or a 4xx
    naming the weights, never a 5xx."""
    RAN.add("weights")
    status, body, _ = call(
        service.host,
        service.port,
        "POST",
        path,
        {"user_id": 7, "surface": "homefeed", "k": k, "outcome_weights": weights},
    )
    WEIGHTED[f"{status // 100}xx"] += 1
    assert status in (200, 422), (weights, k, status, body)
    if status == 200:
        listed = body["candidates"] if path == "/v1/retrieve" else body["items"]
        assert 0 < len(listed) <= k
        if path == "/v1/recommend":
            assert all(math.isfinite(i["score"]) for i in listed)
    else:
        assert "outcome_weights" in body["error"] or "outcome weight" in body["error"], body


@pytest.fixture(scope="module", autouse=True)
def the_fuzzing_sent_both_accepted_and_rejected_retrievals():
    """After the module's fuzz tests, in whatever order they ran: they were not vacuous (checked
    for each fuzz test that ran)."""
    yield
    if "spec" in RAN:
        for path in ("POST /v1/retrieve", "POST /v1/recommend"):
            assert STATUSES[(path, "2xx")] > 0 and STATUSES[(path, "4xx")] > 0, STATUSES
        assert not any(status == "5xx" for _, status in STATUSES)
    if "weights" in RAN:  # valid weight maps were sent and served, not only rejected ones
        assert WEIGHTED["2xx"] > 0 and WEIGHTED["5xx"] == 0, (WEIGHTED, STATUSES)
