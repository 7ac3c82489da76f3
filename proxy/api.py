"""Litestar handlers: chat completions, models, health, readiness, metrics; and every error as OpenAI JSON."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import msgspec
from litestar import Request, Response, asgi, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import ASGIRouteHandler
from litestar.params import FromPath
from litestar.types import HTTPScope, Receive, Scope, Send

from proxy.accounting.metrics import CONTENT_TYPE
from proxy.accounting.recorder import Recorder
from proxy.asgi import ClientDisconnectedError, read_body, send_json, send_stream, unless_gone
from proxy.endpoints.base import Codec
from proxy.endpoints.chat import CHAT
from proxy.headers import forwardable_headers
from proxy.lifespan import Generation, Resources
from proxy.middleware import request_id_of, tally_of
from proxy.outcome import OutcomeError
from proxy.passthrough import passthrough
from proxy.pipeline import CALLER_HEADER
from proxy.wire.errors import (
    InvalidPathError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    ProxyError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
    UpstreamError,
)
from routes import Call, UpstreamPath

__all__ = [
    "HANDLERS",
    "handle_http_exception",
    "handle_outcome_error",
    "handle_proxy_error",
    "handle_unexpected_error",
    "routed",
]

logger = logging.getLogger("turnout.api")

_JSON = "application/json"
_CALLER = CALLER_HEADER.encode()
_MAX_CALLER = 128


def _resources(state: State) -> Resources:
    resources: Resources = state.resources
    return resources


def _check_content_type(headers: Mapping[bytes, bytes]) -> None:
    """JSON bodies only; a missing type (and curl's default form type) is read as JSON too."""
    media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    if media and b"json" not in media and media != b"application/x-www-form-urlencoded":
        raise UnsupportedMediaTypeError(f"Send the request body as application/json, not {media.decode('latin-1')}.")


def routed(codec: Codec[Any], *paths: str) -> ASGIRouteHandler:
    """The handler of a routed endpoint (`POST` on `paths`): its calls go through the pipeline with `codec`.

    Streamed or not, as the caller asked. A client that leaves before a whole answer (an SDK's timeout) takes
    its upstream call with it; the middleware logs 499.
    """

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = cast("HTTPScope", scope)["method"]
        if method != "POST":
            raise MethodNotAllowedError(f"Method {method} is not allowed on {scope['path']}", headers={"allow": "POST"})
        generation = _resources(scope["app"].state).current  # this request's policy, whatever reloads meanwhile
        tally = tally_of(scope)
        tally.routed, tally.endpoint = True, codec.kind
        headers = dict(scope["headers"])
        _check_content_type(headers)
        try:
            raw = await read_body(headers, receive, generation.settings.server.max_body_bytes)
        except ClientDisconnectedError:
            return
        body = codec.decode(raw)
        caller = headers.get(_CALLER, b"").decode("latin-1") or None
        call = Call(
            endpoint=codec,
            body=body,
            headers=forwardable_headers(scope["headers"], request_id_of(scope)),
            caller=caller,
            credential=_credential(headers),
        )
        stream = codec.streams(body)
        tally.caller, tally.stream, tally.request = caller and caller[:_MAX_CALLER], stream, body.view
        if stream:
            relay, outcome = await generation.pipeline.stream(codec, call, tally)
            await send_stream(send, receive, relay, [*outcome.headers(), _server_timing(started)], codec.ends)
            return
        try:
            answer, outcome = await unless_gone(receive, generation.pipeline.complete(codec, call, tally))
        except ClientDisconnectedError:
            return
        tally.answer = answer.body
        await send_json(send, answer.body, [*outcome.headers(), _server_timing(started)])

    handle.__name__ = handle.__qualname__ = f"{codec.kind}_handler"
    handle.__doc__ = f"`POST {paths[0]}`: {codec.kind} requests, answered through the pipeline."
    return asgi(list(paths), is_mount=False, copy_scope=False, name=codec.kind)(handle)


chat_completions = routed(CHAT, "/v1/chat/completions", "/chat/completions")


def _credential(headers: Mapping[bytes, bytes]) -> str:
    """A digest of the client's key: the cache keys on it, and the key itself is never kept."""
    key = headers.get(b"authorization") or headers.get(b"api-key") or headers.get(b"x-api-key")
    return hashlib.blake2b(key, digest_size=16).hexdigest() if key else ""


def _server_timing(started: float) -> tuple[bytes, bytes]:
    """`server-timing: turnout;dur=MS`: the handler's time up to the response (to its first byte for a stream)."""
    return b"server-timing", b"turnout;dur=%.3f" % ((time.perf_counter() - started) * 1000)


def _route_models(generation: Generation) -> dict[str, bytes] | None:
    """With a policy: the routes and aliases as OpenAI model objects, by id; without: None (ask the upstream)."""
    deployment = generation.settings.deployment
    if deployment.policy is None:
        return None
    names = [*deployment.routes, *deployment.aliases]
    return {name: msgspec.json.encode(_Model(id=name)) for name in names}


_MODELS = UpstreamPath("models")


class _Model(msgspec.Struct, frozen=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "turnout"


@get(["/v1/models", "/models"])
async def list_models(request: Request[object, object, State], state: State) -> Response[bytes]:
    """`GET /v1/models`: the policy's routes and aliases, or the upstream's models when there is no policy."""
    generation = _resources(state).current
    models = _route_models(generation)
    if models is not None:
        return Response(b'{"object":"list","data":[' + b",".join(models.values()) + b"]}", media_type=_JSON)
    headers = forwardable_headers(request.scope["headers"], request_id_of(request.scope))
    return Response(await generation.first_upstream().get(_MODELS, headers), media_type=_JSON)


@get(["/v1/models/{model_id:path}", "/models/{model_id:path}"])
async def retrieve_model(
    request: Request[object, object, State], state: State, model_id: FromPath[str]
) -> Response[bytes]:
    """`GET /v1/models/{id}`: one route or alias (or one of the upstream's models when there is no policy)."""
    generation = _resources(state).current
    name = model_id.lstrip("/")
    models = _route_models(generation)
    if models is not None:
        if name not in models:
            raise NotFoundError(f"The model '{name}' does not exist.", param="model")
        return Response(models[name], media_type=_JSON)
    try:  # the id is one path segment, percent-encoded: `..`, a slash or a query cannot reach another endpoint
        path = UpstreamPath("models", name)
    except InvalidPathError as exc:
        raise NotFoundError(f"The model '{name}' does not exist. {exc.message}", param="model") from exc
    headers = forwardable_headers(request.scope["headers"], request_id_of(request.scope))
    try:
        body = await generation.first_upstream().get(path, headers)
    except UpstreamError as exc:
        if exc.upstream_status == 404:  # here the id is the caller's, not Turnout's configuration
            raise NotFoundError(f"The model '{name}' does not exist.", param="model") from exc
        raise
    return Response(body, media_type=_JSON)


@get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers HTTP."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(state: State) -> Response[dict[str, object]]:
    """Ready: the configuration is loaded and the upstream client is open."""
    resources: Resources | None = state.get("resources")
    if resources is None:
        raise ProxyError("Turnout is starting or stopping.", code="not_ready", status_code=503)
    return Response({"status": "ready", "routes": list(resources.current.pipeline.routes)})


@get("/metrics", sync_to_thread=True)
def metrics(state: State) -> Response[bytes]:
    """`GET /metrics`: every metric in Prometheus' text format (all workers' when there are several)."""
    recorder: Recorder = state.recorder
    return Response(recorder.exposition(), media_type=CONTENT_TYPE)


HANDLERS = (chat_completions, list_models, retrieve_model, healthz, readyz, metrics, passthrough)
"""Every handler; a path under `/v1/` that none of the others takes is the pass-through's (`proxy.passthrough`)."""


def _json_error(error: ProxyError, headers: Mapping[str, str] | None = None) -> Response[bytes]:
    headers = error.headers if headers is None else headers
    return Response(error.body(), status_code=error.status, media_type=_JSON, headers=dict(headers))


def handle_proxy_error(_: Request[object, object, State], exc: ProxyError) -> Response[bytes]:
    """Any `ProxyError`: its OpenAI body and status."""
    if exc.status >= 500:
        logger.warning("%s %s: %s", exc.status, type(exc).__name__, exc.message)
    return _json_error(exc)


def handle_outcome_error(_: Request[object, object, State], exc: OutcomeError) -> Response[bytes]:
    """A request no route could answer: its error, with the `x-turnout-*` headers of its outcome."""
    error = exc.error
    if error.status >= 500:
        logger.warning("%s %s: %s", error.status, type(error).__name__, error.message)
    return _json_error(error, exc.headers())


_BY_STATUS: dict[int, type[ProxyError]] = {
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: RequestTooLargeError,
    415: UnsupportedMediaTypeError,
}


def handle_http_exception(request: Request[object, object, State], exc: HTTPException) -> Response[bytes]:
    """The framework's own errors (unknown route, wrong method, body too large, ...) in OpenAI form."""
    status = exc.status_code
    if status == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    elif status == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        message = f"The request body is larger than the limit of {limit} bytes."
    else:
        message = exc.detail
    error_class = _BY_STATUS.get(status, InvalidRequestError if status < 500 else ProxyError)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return _json_error(error_class(message, status_code=status, headers=headers))


def handle_unexpected_error(request: Request[object, object, State], exc: Exception) -> Response[bytes]:
    """Last resort: log the bug with its traceback, answer a plain 500 that leaks nothing."""
    logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(ProxyError("The server had an error while processing your request."))
