"""The HTTP app (FastAPI): Tecton's feature-service API over a `FeatureServer`.

    POST /api/v1/feature-service/get-features        one request's features
    POST /api/v1/feature-service/get-features-batch  several requests' features
    GET  /api/v1/feature-service/metadata            a service's features and request fields
    GET  /health                                     503 until every resource is built
    GET  /metrics                                    Prometheus text
    GET  /docs                                       the OpenAPI page

Every error is a JSON body `{"code", "kind", "message", "view", "feature"}`: 4xx for a bad
request (400 a missing or mistyped field, 401 a wrong API key, 404 an unknown service, 413 a
body over the limit), 500 for a transform's wrong output, 502 for a failed view, 504 for a
late one, 503 while resources cannot be built or the online store cannot be reached. Never
a traceback, never a secret.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.define.feature_views import RealtimeFeatureView
from engine.errors import (
    BadRequest,
    Interrupted,
    OutputError,
    ResourceError,
    RivuletError,
    StoreError,
    ViewTimeout,
)
from engine.serve.metrics import CONTENT_TYPE, Metrics
from engine.serve.server import FeatureServer, FeatureVector
from engine.serve.values import data_type_json, to_json

log = logging.getLogger("rivulet")
API = "/api/v1/feature-service"
MAX_BODY_BYTES = 1 << 20  # a request body larger than this is refused with 413


class MetadataOptions(BaseModel):
    """Which metadata to answer with, per feature."""

    model_config = ConfigDict(extra="allow")
    includeNames: bool = True
    includeDataTypes: bool = True
    includeServingStatus: bool = True
    includeEffectiveTimes: bool = False


class _Params(BaseModel):
    model_config = ConfigDict(extra="allow")  # Tecton's other options are accepted, unused
    featureServiceName: str
    metadataOptions: MetadataOptions = Field(default_factory=MetadataOptions)
    allowPartialResults: bool = False


class RequestData(BaseModel):
    """One request's keys and request-time fields."""

    joinKeyMap: dict[str, Any] = Field(default_factory=dict)
    requestContextMap: dict[str, Any] = Field(default_factory=dict)


class GetFeaturesParams(_Params, RequestData):
    pass


class GetFeaturesBatchParams(_Params):
    requestData: list[RequestData]


class GetFeatures(BaseModel):
    params: GetFeaturesParams


class GetFeaturesBatch(BaseModel):
    params: GetFeaturesBatchParams


def create_app(
    server: FeatureServer, api_key: str | None = None, max_body: int = MAX_BODY_BYTES
) -> FastAPI:
    """The app serving `server`: it starts building resources when the app starts and tears
    them down when it stops (after in-flight requests, which uvicorn drains first)."""
    metrics = Metrics(server.runtime)
    redact = server.runtime.redact

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.building()
        yield
        await server.close()

    app = FastAPI(
        title=f"Rivulet feature server: {server.job.name}",
        summary="Realtime features over Tecton's HTTP API.",
        lifespan=lifespan,
    )

    def failure(error: RivuletError) -> Response:
        code, body = _error_body(error, redact)
        return Response(body, code, media_type="application/json")

    app.add_middleware(_Guard, api_key=api_key, max_body=max_body, metrics=metrics, redact=redact)

    @app.exception_handler(RivuletError)
    async def rivulet_error(request: Request, error: RivuletError) -> Response:
        return failure(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        return failure(BadRequest(_validation_message(error.errors())))

    @app.post(f"{API}/get-features", openapi_extra=_body_schema(GetFeatures))
    async def get_features(request: Request) -> Response:
        """One request's features, as Tecton's `get-features` answers them."""
        params = (await _parsed(request, GetFeatures)).params
        vector = await server.aget_features(
            params.featureServiceName,
            params.requestContextMap,
            params.joinKeyMap,
            params.allowPartialResults,
        )
        return answer(
            {
                "result": {"features": _values(vector)},
                "metadata": {"features": _metadata(vector, params.metadataOptions)},
            }
        )

    @app.post(f"{API}/get-features-batch", openapi_extra=_body_schema(GetFeaturesBatch))
    async def get_features_batch(request: Request) -> Response:
        """Several requests' features, in request order, with one metadata list."""
        params = (await _parsed(request, GetFeaturesBatch)).params
        vectors = [
            await server.aget_features(
                params.featureServiceName,
                one.requestContextMap,
                one.joinKeyMap,
                params.allowPartialResults,
            )
            for one in params.requestData
        ]
        metadata = _metadata(vectors[0], params.metadataOptions) if vectors else []
        return answer(
            {
                "result": [{"features": _values(vector)} for vector in vectors],
                "metadata": {"features": metadata},
            }
        )

    @app.get(f"{API}/metadata")
    async def metadata(featureServiceName: str) -> Response:
        """The service's features and the request fields it needs, with their types."""
        features = server.metadata(featureServiceName)
        fields = {
            field.name: field.dtype
            for view in server.servable[featureServiceName]
            if isinstance(view, RealtimeFeatureView)
            for field in view.request_fields
        }
        return answer(
            {
                "featureServiceName": featureServiceName,
                "inputJoinKeys": [
                    {"name": name, "dataType": data_type_json(dtype)}
                    for name, dtype in server.join_keys(featureServiceName).items()
                ],
                "inputRequestContextKeys": [
                    {"name": name, "dataType": data_type_json(dtype)}
                    for name, dtype in fields.items()
                ],
                "featureValues": [
                    {"name": name, "dataType": data_type_json(dtype)} for name, dtype in features
                ],
            }
        )

    @app.get("/health")
    async def health() -> Response:
        """200 once every resource is built; 503 before, or when one cannot be built."""
        if server.ready:
            return answer({"status": "ok"})
        if server.failure is not None:
            return failure(server.failure)
        return answer({"status": "starting", "message": "Resources are being built."}, 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Requests, latency, calls, retries, resource builds and cache hits."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return app


def answer(body: Any, code: int = 200) -> Response:
    return Response(json.dumps(body, allow_nan=False), code, media_type="application/json")


def _error_body(error: RivuletError, redact: Callable[[str], str]) -> tuple[int, bytes]:
    """An error's status code and JSON body; a server-side one is also logged."""
    code = _status(error)
    body = {"code": code, "kind": error.kind, "message": redact(error.message)}
    body |= {k: v for k in ("view", "feature") if (v := getattr(error, k)) is not None}
    if code >= 500:
        log.warning("%s", body["message"])
    return code, json.dumps(body).encode()


class _Guard:
    """ASGI middleware before every route: the API key, the body size limit (the body is
    read here, at most `max_body` bytes of it), and request metrics."""

    def __init__(
        self,
        app: Any,
        api_key: str | None,
        max_body: int,
        metrics: Metrics,
        redact: Callable[[str], str],
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body
        self.metrics = metrics
        self.redact = redact

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, path = time.perf_counter(), scope["path"]
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refused = self._refusal(path, dict(scope["headers"]))
            body = b""
            while refused is None:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if len(body) > self.max_body:
                    refused = _too_large(self.max_body)
                elif not message.get("more_body", False):
                    break
            if refused is not None:
                code, text = _error_body(refused, self.redact)
                return await Response(text, code, media_type="application/json")(
                    scope, receive, sending
                )
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, sending)
        finally:
            if path.startswith(API):
                self.metrics.observe(path.removeprefix(API + "/"), status, _since(began))

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> BadRequest | None:
        """Why the request is refused before its body is read, if it is."""
        guarded = path != "/health"  # load balancers probe it without a key
        if guarded and self.api_key is not None and not _authorized(headers, self.api_key):
            return BadRequest(
                "The request has no valid API key; send `Authorization: Bearer <key>` or "
                "`Authorization: Tecton-key <key>`.",
                status=401,
            )
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return _too_large(self.max_body)
        return None


def _too_large(limit: int) -> BadRequest:
    return BadRequest(f"The request body is over the limit of {limit:,} bytes.", 413)


def _values(vector: FeatureVector) -> list[Any]:
    return [to_json(feature.value) for feature in vector.features]


def _metadata(vector: FeatureVector, options: MetadataOptions) -> list[dict[str, Any]]:
    described = []
    for feature in vector.features:
        one: dict[str, Any] = {}
        if options.includeNames:
            one["name"] = feature.name
        if options.includeDataTypes:
            one["dataType"] = data_type_json(feature.dtype)
        if options.includeServingStatus:
            one["status"] = feature.status
        if options.includeEffectiveTimes and feature.effective_time is not None:
            one["effectiveTime"] = to_json(feature.effective_time)
        described.append(one)
    return described


def _status(error: RivuletError) -> int:
    if isinstance(error, BadRequest):
        return error.status
    if isinstance(error, OutputError):
        return 500
    if isinstance(error, ViewTimeout):
        return 504
    if isinstance(error, Interrupted | StoreError) or (
        isinstance(error, ResourceError) and error.provider is not None
    ):
        return 503  # shutting down, the online store lost, or a resource that cannot be built
    return 502


def _authorized(headers: dict[bytes, bytes], api_key: str) -> bool:
    given = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, key = given.partition(" ")
    if scheme.lower() not in ("bearer", "tecton-key"):
        return False
    return hmac.compare_digest(key.strip().encode(), api_key.encode())


M = TypeVar("M", bound=BaseModel)


async def _parsed(request: Request, model: type[M]) -> M:
    """The body as `model`, whatever its content type says (`curl -d` sends a form's): a
    BadRequest naming the field at fault when it does not fit."""
    try:
        data = json.loads(await request.body())
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadRequest(_validation_message(error.errors())) from None


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses `model` itself, refs inlined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}


def _validation_message(problems: Sequence[Any]) -> str:
    """The first problem pydantic found, as one sentence naming the field."""
    if not problems:
        return "The request body is not valid."
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON."
    if first.get("type") == "missing":
        return f"The request lacks '{where}'."
    return f"The request's '{where}' is not valid: {first.get('msg', 'invalid')}."


def _since(began: float) -> float:
    return time.perf_counter() - began
