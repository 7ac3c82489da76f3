"""Litestar handlers: the routed endpoints (chat, embeddings, completions), models, health, metrics; OpenAI errors."""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, cast

from litestar import Request, Response, asgi, get, route
from litestar.datastructures import State
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException
from litestar.handlers import ASGIRouteHandler
from litestar.params import FromPath
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from policies import Decision
from proxy.accounting.metrics import CONTENT_TYPE
from proxy.accounting.recorder import Recorder
from proxy.admin import ADMIN_HANDLERS
from proxy.asgi import ClientDisconnectedError, read_body, send_json, send_stream, unless_gone
from proxy.deadline import DEADLINE_HEADER
from proxy.endpoints.base import Codec
from proxy.endpoints.chat import CHAT
from proxy.endpoints.completions import COMPLETIONS
from proxy.endpoints.embeddings import EMBEDDINGS
from proxy.endpoints.responses import RESPONSES
from proxy.gate import Identity, identity_of
from proxy.headers import forwardable_headers
from proxy.lifespan import Resources
from proxy.middleware import request_id_of, tally_of
from proxy.outcome import OutcomeError
from proxy.passthrough import pass_through, passthrough
from proxy.pipeline import CALLER_HEADER, Admit
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
    "ROUTED_PATHS",
    "handle_http_exception",
    "handle_outcome_error",
    "handle_proxy_error",
    "handle_unexpected_error",
    "routed",
]

logger = logging.getLogger("turnout.api")

_JSON = "application/json"
_V1 = b"/v1/"
_EVERY_METHOD = list(HttpMethod)
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


def routed(codec: Codec[Any], *paths: str, stored_upstream: bool = False) -> ASGIRouteHandler:
    """The handler of a routed endpoint (`POST` on `paths`): its calls go through the pipeline with `codec`.

    Streamed or not, as the caller asked. A client that leaves before a whole answer (an SDK's timeout) takes
    its upstream call with it; the middleware logs 499. With `stored_upstream` (the Responses API), the
    upstream keeps each answer by its id: where each id lives is remembered (unless `store` is false), and a
    request continuing one (`previous_response_id`) is steered to that upstream (`proxy.response_homes`).
    """

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if cast("HTTPScope", scope)["method"] != "POST":
            await _not_served(scope, receive, send, "POST")
            return
        resources = _resources(scope["app"].state)
        generation = resources.current  # this request's policy, whatever reloads meanwhile
        tally = tally_of(scope)
        tally.routed, tally.endpoint = True, codec.kind
        headers = dict(scope["headers"])
        _check_content_type(headers)
        try:
            raw = await read_body(headers, receive, generation.settings.server.max_body_bytes)
        except ClientDisconnectedError:
            return
        body = codec.decode(raw)
        identity = identity_of(scope)
        if identity is None:
            caller = headers.get(_CALLER, b"").decode("latin-1") or None
        else:  # with keys, the key says who calls, never a header
            caller = identity.key.name
            model = codec.requested_model(body)
            if not identity.key.may_use_model(model):
                raise resources.access_or_fail().forbidden(f"the model '{model}'")
        call = Call(
            endpoint=codec,
            body=body,
            headers=forwardable_headers(scope["headers"], request_id_of(scope)),
            caller=caller,
            team=identity.key.team if identity is not None else None,
            credential=_credential(headers),
            deadline=headers[DEADLINE_HEADER].decode("latin-1") if DEADLINE_HEADER in headers else None,
        )
        stream = codec.streams(body)
        tally.caller, tally.stream = caller and caller[:_MAX_CALLER], stream
        tally.request, tally.reader = body, codec
        admit = _admit(resources, identity) if identity is not None else None
        homes = resources.homes if stored_upstream else None
        previous = body.view.previous_response_id if homes is not None else None
        steer = await homes.steer(generation.pipeline.routes, previous) if homes is not None else None
        remember = homes is not None and body.view.store is not False
        routes = generation.pipeline.routes
        if stream:
            relay, outcome = await generation.pipeline.stream(codec, call, tally, steer, admit)
            tally.rag = dict(outcome.route_headers).get("x-turnout-rag")
            chunks = homes.relayed(routes, outcome, relay) if homes is not None and remember else relay
            await send_stream(send, receive, chunks, [*outcome.headers(), _server_timing(started)], codec.ends)
            return
        try:
            answer, outcome = await unless_gone(receive, generation.pipeline.complete(codec, call, tally, steer, admit))
        except ClientDisconnectedError:
            return
        if homes is not None and remember:
            await homes.answered(routes, outcome, answer.body)
        tally.answer, tally.rag = answer.body, dict(outcome.route_headers).get("x-turnout-rag")
        await send_json(send, answer.body, [*outcome.headers(), _server_timing(started)])

    handle.__name__ = handle.__qualname__ = f"{codec.kind}_handler"
    handle.__doc__ = f"`POST {paths[0]}`: {codec.kind} requests, answered through the pipeline."
    return asgi(list(paths), is_mount=False, copy_scope=False, name=codec.kind)(handle)


def _admit(resources: Resources, identity: Identity) -> Admit:
    """What lets a keyed call in once its route is chosen: a route the key may use, within its limits."""
    access = resources.access_or_fail()

    async def admit(decision: Decision, reserve: Callable[[], Decimal]) -> None:
        if not identity.key.may_use_route(decision.route):
            raise access.forbidden(f"the route '{decision.route}'")
        await access.admit(identity, reserve=reserve)

    return admit


async def _not_served(scope: Scope, receive: Receive, send: Send, allow: str | None) -> None:
    """A request on a handler's path that it does not serve (another method, a deeper path).

    Under `/v1/` it is the upstream's to answer, as OpenAI would (`GET /v1/chat/completions` lists the stored
    chat completions, `DELETE /v1/models/{id}` deletes a fine-tuned model): the pass-through takes it. On the
    paths without `/v1`, which OpenAI does not have, it is a 405 naming the methods served (`allow`), or a 404.
    """
    http = cast("HTTPScope", scope)
    if http.get("raw_path", b"").startswith(_V1):
        await pass_through(scope, receive, send)
        return
    method, path = http["method"], http["path"]
    if allow is None:
        raise NotFoundError(f"Invalid URL ({method} {path})")
    raise MethodNotAllowedError(f"Method {method} is not allowed on {path}", headers={"allow": allow})


chat_completions = routed(CHAT, "/v1/chat/completions", "/chat/completions")
responses = routed(RESPONSES, "/v1/responses", "/responses", stored_upstream=True)
embeddings = routed(EMBEDDINGS, "/v1/embeddings", "/embeddings")
completions = routed(COMPLETIONS, "/v1/completions", "/completions")
ROUTED_PATHS = frozenset(path for each in (chat_completions, responses, embeddings, completions) for path in each.paths)
"""The paths whose `POST`s the pipeline answers (and admits, once their route is chosen: `proxy.gate`)."""


def _credential(headers: Mapping[bytes, bytes]) -> str:
    """A digest of the client's key: the cache keys on it, and the key itself is never kept."""
    key = headers.get(b"authorization") or headers.get(b"api-key") or headers.get(b"x-api-key")
    return hashlib.blake2b(key, digest_size=16).hexdigest() if key else ""


def _server_timing(started: float) -> tuple[bytes, bytes]:
    """`server-timing: turnout;dur=MS`: the handler's time up to the response (to its first byte for a stream)."""
    return b"server-timing", b"turnout;dur=%.3f" % ((time.perf_counter() - started) * 1000)


_MODELS = UpstreamPath("models")


async def _list_models(scope: Scope, receive: Receive, send: Send) -> None:
    """`GET /v1/models`: with a policy, its routes and aliases and the upstreams' models; without, the upstream's."""
    if cast("HTTPScope", scope)["method"] != "GET":
        await _not_served(scope, receive, send, "GET")
        return
    resources = _resources(scope["app"].state)
    generation = resources.current
    if generation.settings.deployment.policy is not None:
        models = await resources.models.listing()
        await send_json(send, b'{"object":"list","data":[' + b",".join(models) + b"]}", [])
        return
    headers = forwardable_headers(scope["headers"], request_id_of(scope))
    await send_json(send, await generation.first_upstream().get(_MODELS, headers), [])


async def _retrieve_model(scope: Scope, receive: Receive, send: Send, name: str) -> None:
    """`GET /v1/models/{id}`: one route, alias or upstream model (without a policy: the upstream's answer)."""
    resources = _resources(scope["app"].state)
    generation = resources.current
    if generation.settings.deployment.policy is not None:
        model = await resources.models.get(name)
        if model is None:
            raise NotFoundError(f"The model '{name}' does not exist.", param="model")
        await send_json(send, model, [])
        return
    try:  # the id is one path segment, percent-encoded: `..`, a slash or a query cannot reach another endpoint
        path = UpstreamPath("models", name)
    except InvalidPathError as exc:
        raise NotFoundError(f"The model '{name}' does not exist. {exc.message}", param="model") from exc
    headers = forwardable_headers(scope["headers"], request_id_of(scope))
    try:
        body = await generation.first_upstream().get(path, headers)
    except UpstreamError as exc:
        if exc.upstream_status == 404:  # here the id is the caller's, not Turnout's configuration
            raise NotFoundError(f"The model '{name}' does not exist.", param="model") from exc
        raise
    await send_json(send, body, [])


list_models = asgi(["/v1/models", "/models"], is_mount=False, copy_scope=False, name="list_models")(_list_models)

# Litestar (2.25) gives an `asgi` handler no path parameters on an HTTP request, so the handlers of paths with an id
# are `route`s of every method that return the ASGI app to run: the served one, or `_not_served`.


@route(["/v1/models/{model_id:path}", "/models/{model_id:path}"], http_method=_EVERY_METHOD, name="retrieve_model")
async def retrieve_model(request: Request[object, object, State], model_id: FromPath[str]) -> ASGIApp:
    """`GET /v1/models/{id}` (`_retrieve_model`); any other method (`DELETE` a fine-tuned model) is not served here."""
    if request.method != "GET":
        return functools.partial(_not_served, allow="GET")
    return functools.partial(_retrieve_model, name=model_id.lstrip("/"))


_HELD = frozenset({("GET", ""), ("DELETE", ""), ("GET", "input_items"), ("POST", "cancel")})
"""What Turnout sends to the upstream that holds a stored response: `(method, what follows its id)`."""


@route(["/v1/responses/{rest:path}", "/responses/{rest:path}"], http_method=_EVERY_METHOD, name="stored_response")
async def stored_response(request: Request[object, object, State], rest: FromPath[str]) -> ASGIApp:
    """`GET`, `DELETE /v1/responses/{id}`, `GET .../input_items`, `POST .../cancel`: to the response's upstream.

    Anything else under `/v1/responses/` (`POST /v1/responses/input_tokens`, `/compact`, what OpenAI adds)
    is not served here (`_not_served`).
    """
    response_id, _, tail = rest.strip("/").partition("/")
    if (request.method, tail) not in _HELD:
        return functools.partial(_not_served, allow=None)
    return functools.partial(_on_home, response_id=response_id, tail=tail)


async def _on_home(scope: Scope, receive: Receive, send: Send, response_id: str, tail: str) -> None:
    """Send a request about a stored response to the upstream that holds it; relay its status and body.

    An id Turnout never relayed (or forgot) goes to the default upstream. The id is one path segment
    (`UpstreamPath`): it cannot reach another endpoint. The query (`input_items`' `limit`, `order`, `after`,
    `include`) passes as the client sent it.
    """
    http = cast("HTTPScope", scope)
    resources = _resources(scope["app"].state)
    generation = resources.current
    method = http["method"]
    try:
        query = urllib.parse.parse_qsl(http["query_string"].decode("latin-1"), keep_blank_values=True)
        path = UpstreamPath("responses", response_id, *([tail] if tail else []), query=query)
    except (InvalidPathError, ValueError) as exc:
        raise NotFoundError(f"Response with id '{response_id}' not found.") from exc
    home = await resources.homes.homes.find(response_id)
    upstream = generation.upstreams.get(home.upstream) if home is not None else None
    upstream = upstream or generation.first_upstream()
    headers = forwardable_headers(http["headers"], request_id_of(scope))
    body = b""
    if method == "POST":
        try:
            body = await read_body(dict(http["headers"]), receive, generation.settings.server.max_body_bytes)
        except ClientDisconnectedError:
            return
    status, content, content_type = await upstream.relay(method, path, headers, body or None)
    if method == "DELETE" and status < 300:
        await resources.homes.homes.forget(response_id)
    if status >= 500 or status in (401, 403):  # the upstream's trouble, or Turnout's key: Turnout's own 502
        raise UpstreamError(f"The upstream '{upstream.name}' failed with status {status}.")
    if "json" not in content_type:
        raise UpstreamError(f"The upstream '{upstream.name}' answered with {content_type}, not JSON.")
    await send_json(send, content, [], status)


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


HANDLERS = (
    chat_completions,
    responses,
    stored_response,
    embeddings,
    completions,
    list_models,
    retrieve_model,
    healthz,
    readyz,
    metrics,
    *ADMIN_HANDLERS,
    passthrough,
)
"""Every handler; a path under `/v1/` that none of the others takes, or that one takes but does not serve
(`_not_served`), is the pass-through's (`proxy.passthrough`)."""


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
