"""The retrieval service: a FastAPI app factory with injected dependencies.

    app = create_app(manager, features)     # VersionManager, FeatureReader (or None)

Requests are validated here and served by ``serving.service.service.RetrievalService``: concurrent
requests are micro-batched (``ServingConfig.max_wait_ms``, ``max_batch``), their features read in
one call, encoded in one incremental pass over the users' cached encoder states
(``encoder_cache_mb``) and searched in one faiss call.

Endpoints:

``POST /v1/retrieve``  ``{user_id, surface, k?, outcome_weights?, recent_events?, query_id?}`` ->
    ``{candidates: [{item_id, score, outcome, offset}], model_version, index_version, version,
    served_by, surface, user_id, k}``; stage times in the ``Server-Timing`` header
    (queue, feature, encode, ann, merge, total; milliseconds; feature, encode and ann are the
    request's batch's) and the batch size in ``X-Batch-Size``.
``POST /v1/recommend`` ``{user_id, surface, k?, outcome_weights?, candidates?, recent_events?, query_id?}``
    -> ``{items: [{item_id, score, probabilities, retrieval_score, outcome, offset}], ranked_by,
    candidates_ranked, model_version, index_version, version, served_by, surface, user_id, k}``:
    retrieval of ``ServingConfig.recommend_candidates`` (200) candidates through the same ANN
    path (or the request's own ``candidates``), ranked by the version's ranking head over the
    keys/values of the same encode, the top k by ``score = sum_o w_o p_o``; through the same
    micro-batcher, validation and errors as ``/v1/retrieve`` (``rank`` is one more stage).
``GET /healthz``       the process is up.
``GET /readyz``        200 once the first refresh ran and at least one served surface has a
    verified champion loaded, else 503 (a surface without one does not make the others unready).
``GET /readyz/{surface}``  200 when that surface has a champion loaded, 503 if not, 404 if not served.
``GET /versions``      what is loaded per surface, fallbacks in use, and the last load error
    (exception type and a fixed sentence: no endpoint, key or path).
``GET /metrics``       Prometheus text: ``pinrec_requests_total{endpoint,status,version}``,
    ``pinrec_request_duration_seconds{endpoint}``, ``pinrec_stage_duration_seconds{stage}``
    (queue, feature, encode, ann, merge), ``pinrec_batch_size`` (requests per micro-batch),
    ``pinrec_model_flops_per_request`` (sum / count = mean model FLOPs of a request: the
    positions actually encoded and the head), ``pinrec_encoder_state_requests_total{kind}``
    (cold, hit, extend, full), ``pinrec_encoder_states`` / ``pinrec_encoder_state_bytes``,
    ``pinrec_loaded_version{surface,role,version}``, ``pinrec_version_loads_total{surface,result}``,
    ``pinrec_version_load_failures_total{surface,version,reason}`` (reason: the exception type, e.g.
    ``IntegrityError`` for a checksum mismatch), ``pinrec_feature_read_errors_total``,
    ``pinrec_surface_ready{surface}``, ``pinrec_version_fallbacks_total{surface,pointer_version,
    serving_version}`` and ``pinrec_serving_fallback{...}`` (1 while an earlier champion serves).
``GET /openapi.json``, ``/docs``: the OpenAPI spec.

Errors are JSON ``{"error": <reason>, "detail": ...}``: 422 for invalid fields (unknown outcome or
surface name, k out of range, malformed JSON, unknown fields), 413 for a body over
``max_body_bytes``, 404 for a valid surface this service does not serve, 503 while a surface has
no version loaded, and 500 ``{"error": "internal error"}`` (nothing more: the exception and its
traceback go to the log only) for anything unexpected. Outcome weights are bounded to
``[0, MAX_OUTCOME_WEIGHT]`` and normalised to sum to 1. The user's sequence is read from the feature reader (the
Feast online store)
and extended with ``recent_events`` (which is all a cold user has); a feature-store failure is
counted and the request is served from ``recent_events`` alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.service.metrics import Metrics
from serving.service.schemas import (
    _BUILTIN_MODELS,
    RecommendResponse,
    RetrieveResponse,
    request_models,
)
from serving.service.service import (
    FeatureReader,
    Pending,
    RetrievalService,
    Served,
    ServingConfig,
)
from serving.service.versions import VersionManager

log = logging.getLogger("serving.service.app")

MAX_BODY_BYTES = 64 * 1024


def _error(status: int, reason: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": reason}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class _GuardMiddleware:
    """Body size limit (413, checked on Content-Length and on the bytes actually received) and
    request counting/latency for the retrieval endpoint (status and serving version labels)."""

    def __init__(self, app: Any, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = {"/v1/retrieve": "retrieve", "/v1/recommend": "recommend"}.get(path)
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
            await send(message)

        too_big = False
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                too_big = False
        body_receive = receive
        if not too_big and scope.get("method") in ("POST", "PUT", "PATCH"):
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    too_big = True
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            sent = False

            async def body_receive() -> dict:  # replay the buffered body once
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

        if too_big:
            response = _error(413, f"request body over {self.max_body_bytes} bytes")
            await response(scope, receive, send_wrapper)
        else:
            try:
                await self.app(scope, body_receive, send_wrapper)
            except Exception:  # noqa: BLE001 - the catch-all: logged in full, answered with nothing inside
                log.exception("unexpected error on %s %s", scope.get("method"), path)
                if status_holder.get("started"):
                    raise  # the response has begun: nothing else can be sent
                status_holder["status"] = 500
                await _error(500, "internal error")(scope, receive, send)
        if endpoint is not None:
            version = (scope.get("state") or {}).get("version", "none")
            self.metrics.requests.labels(endpoint, str(status_holder["status"]), version).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def _settle(future: asyncio.Future, result: Served | BaseException) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def create_app(
    manager: VersionManager,
    features: FeatureReader | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    start_polling: bool = True,
    inline: bool = False,
    serving: ServingConfig | None = None,
    metrics_registry: CollectorRegistry | None = None,
    vocabulary: Any | None = None,
) -> FastAPI:
    """The service. ``start_polling``: run ``manager``'s background refresh while the app runs
    (the first refresh happens in that thread, so the app answers /healthz at once).
    ``serving``: micro-batching and encoder-state settings (``ServingConfig``). ``inline``:
    serve each request on the event loop as a batch of one instead of through the micro-batcher
    (one request at a time per process; /healthz and /readyz wait behind it). ``vocabulary``
    (``events.vocabulary.Vocabulary``): the surfaces and outcomes requests may name (enums in the
    OpenAPI spec); default: the built-in data's."""
    models = (
        _BUILTIN_MODELS
        if vocabulary is None
        else request_models(vocabulary.surfaces, vocabulary.outcomes, vocabulary.engaged)
    )
    service = RetrievalService(manager, features, serving, on_feature_error=lambda n: metrics.feature_errors.inc(n))
    metrics = Metrics(manager, service, metrics_registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        if start_polling:
            manager.start()
        try:
            yield
        finally:
            if start_polling:
                manager.stop()
            service.stop()

    app = FastAPI(
        title="pinrec-ops retrieval",
        version="1",
        lifespan=lifespan,
        description="PinRec multi-token generative retrieval (see docs/design.md, Serving API).",
    )
    app.state.manager = manager
    app.state.metrics = metrics
    app.state.service = service
    app.add_middleware(_GuardMiddleware, metrics=metrics, max_body_bytes=max_body_bytes)

    # -- error handlers: every error is JSON {"error": reason, "detail"?} ------------------------

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            errors.append(
                {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
            )
        reason = "; ".join(f"{'.'.join(e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return _error(422, reason or "invalid request", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    # -- retrieval ----------------------------------------------------------------------------

    def _route(req: Any, request: Request) -> Pending | Response:
        """The version that serves this request (404 / 503 when there is none)."""
        received = time.perf_counter()
        state = manager.state(req.surface)
        if state is None:
            return _error(404, f"surface {req.surface!r} is not served here; served: {manager.surfaces}")
        loaded, role = state.route(req.surface, req.user_id)
        if loaded is None:
            return _error(503, f"no version of {req.surface!r} is loaded yet")
        request.state.version = loaded.version
        events = None
        if req.recent_events:
            events = [
                {
                    "item_id": e.item_id,
                    "outcome": e.outcome,
                    "surface": e.surface or req.surface,
                    "timestamp_us": e.timestamp_us,
                }
                for e in req.recent_events
            ]
        candidates = getattr(req, "candidates", None)
        return Pending(
            req.user_id,
            req.surface,
            req.k,
            req.outcome_weights,
            events,
            loaded,
            role,
            received,
            "recommend" if isinstance(req, models.RecommendRequest) else "retrieve",
            list(candidates) if candidates is not None else None,
            req.query_id,
        )

    async def retrieve(req: Any, request: Request) -> Any:
        pending = _route(req, request)
        if isinstance(pending, Response):
            return pending
        return await _serve(pending, req, request)

    async def recommend(req: Any, request: Request) -> Any:
        pending = _route(req, request)
        if isinstance(pending, Response):
            return pending
        return await _serve(pending, req, request)

    async def _serve(pending: Pending, req: Any, request: Request) -> Response:
        if inline:
            served = service.serve_now(pending)
        else:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Served] = loop.create_future()
            service.submit(pending, lambda result: loop.call_soon_threadsafe(_settle, future, result))
            served = await future
        metrics.observe(served)
        log.debug("served user %s on %s by %s %s", req.user_id, req.surface, pending.role, served.version)
        return Response(
            served.body,
            media_type="application/json",
            headers={"Server-Timing": served.server_timing, "X-Batch-Size": str(served.batch_size)},
        )

    errors = {
        404: {"description": "surface not served here"},
        413: {"description": "body too large"},
        422: {"description": "invalid request"},
        503: {"description": "no version loaded yet"},
    }
    retrieve.__annotations__["req"] = models.RetrieveRequest  # this service's vocabulary
    app.post("/v1/retrieve", response_model=RetrieveResponse, responses=errors)(retrieve)
    recommend.__annotations__["req"] = models.RecommendRequest
    app.post("/v1/recommend", response_model=RecommendResponse, responses=errors)(recommend)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """200 once the first refresh ran and at least one surface has a champion (per surface:
        ``surfaces``, and ``/readyz/{surface}``)."""
        body = {
            "ready": manager.ready,
            "surfaces": {s: manager.surface_ready(s) for s in manager.surfaces},
            "versions": manager.loaded(),
        }
        return JSONResponse(body, status_code=200 if manager.ready else 503)

    @app.get("/readyz/{surface}")
    async def readyz_surface(surface: str) -> Response:
        """200 when this surface has a champion loaded, 503 when not yet, 404 when not served."""
        if surface not in manager.surfaces:
            return _error(404, f"surface {surface!r} is not served here; served: {manager.surfaces}")
        if not manager.surface_ready(surface):
            return _error(503, f"no version of {surface!r} is loaded yet")
        return JSONResponse({"ready": True, "surface": surface, "versions": manager.loaded()[surface]})

    @app.get("/versions")
    async def versions() -> dict[str, Any]:
        return {"versions": manager.loaded(), "fallbacks": manager.fallbacks, "errors": manager.errors}

    @app.get("/metrics")
    def prometheus() -> Response:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
