"""The pass-through: every request under `/v1/` that no other handler takes, sent on to an upstream as it came.

Files, uploads, batches, fine-tuning, moderations, audio, images, vector stores, assistants, ...: Turnout
routes none of them, but a client whose `base_url` is Turnout calls them all. Each goes to the default
upstream (that of the first route), or to the one the policy file's `passthrough.upstream` names, with:

- the method, the path after `/v1`, the query, `content-type`, `content-length` and the body as they came
  (the path and query checked and re-encoded by `routes.upstream.UpstreamPath.from_client`: an encoded
  slash or a `..` segment is a 400 and reaches nobody);
- the body streamed both ways, never held whole: a 100 MB upload or download costs a few buffers of memory;
- the client's credentials (`authorization`, `api-key`, ...) replaced by the upstream's key, the hop-by-hop
  headers dropped both ways, Turnout's `x-request-id` added (`proxy.headers.forwardable_headers`);
- the upstream's status and the headers a client acts on relayed (`_RELAYED`), its body too: an error or a
  JSON answer of up to `REDACTED_UP_TO` bytes is read whole and has Turnout's secrets removed; anything
  else (a file's content, audio, a long listing) is relayed byte for byte as it streams (see `_relay`);
- a timeout before the answer's headers a 504, a connection failure a 502, both in OpenAI's format;
- a client that leaves, during its upload or while waiting or downloading, takes the upstream call with
  it at once (the access log says 499).

The pass-through is a mount of Litestar's router on `/v1`: paths that a handler names exactly
(`/v1/chat/completions`, `/v1/models`), and those under a handler's path parameters (`/v1/models/{id}`,
`/v1/responses/{id}`), are routed to those handlers first (`tests/unit/test_passthrough.py`); what such a
handler does not serve (another method, a deeper path) it hands back (`pass_through`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import cast

from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import HTTPScope, Receive, Scope, Send

from proxy.accounting.tally import Tally
from proxy.asgi import ClientDisconnectedError
from proxy.config.policyfile import PASSTHROUGH_LABEL
from proxy.gate import identity_of
from proxy.headers import forwardable_headers
from proxy.lifespan import Generation, Resources
from proxy.middleware import request_id_of, tally_of
from proxy.wire.errors import NotFoundError, ProxyError, error_body
from proxy.wire.redaction import Redactor
from routes.upstream import Forwarded, Upstream, UpstreamPath

__all__ = ["FAMILIES", "REDACTED_UP_TO", "family_of", "pass_through", "passthrough"]

logger = logging.getLogger("turnout.passthrough")

FAMILIES = frozenset(
    {
        "assistants",
        "audio",
        "batches",
        "chat",
        "chatkit",
        "completions",
        "containers",
        "content_provenance_checks",
        "conversations",
        "embeddings",
        "evals",
        "files",
        "fine_tuning",
        "images",
        "models",
        "moderations",
        "organization",
        "projects",
        "realtime",
        "responses",
        "skills",
        "threads",
        "uploads",
        "vector_stores",
        "videos",
    }
)
"""OpenAI's API families (the first segment of their paths, from OpenAI's own spec): a pass-through's
`endpoint` metric label; any other path counts as `other`, so that the label stays bounded."""
REDACTED_UP_TO = 1024 * 1024
"""An error answer, or a JSON one, of at most this many bytes is read whole and has Turnout's secrets removed."""

_PREFIX = b"/v1/"
_QUOTED = 500
"""Bytes of an upstream's error that is not JSON quoted in the OpenAI error it becomes."""
_JSON_TYPE = (b"content-type", b"application/json")
_KEPT_REQUEST_HEADERS = (b"content-type", b"content-length")
"""Dropped by `forwardable_headers` (the routed endpoints send their own); a pass-through keeps them as sent."""
_RELAYED = frozenset({b"content-type", b"content-disposition", b"content-length", b"content-encoding", b"retry-after"})
_RELAYED_PREFIXES = (b"x-ratelimit-", b"openai-")
_NOT_RELAYED = frozenset({b"openai-organization", b"openai-project"})
"""Turnout's own account at the upstream, not the client's business (their request twins are dropped too)."""


def family_of(path: bytes) -> str:
    """The API family of a path under `/v1/` (`files` for `/v1/files/file-abc/content`), else `other`."""
    first = path[len(_PREFIX) :].split(b"/", 1)[0].decode("latin-1")
    return first if first in FAMILIES else "other"


async def _passthrough(scope: Scope, receive: Receive, send: Send) -> None:
    """Everything under `/v1/` that no other handler takes: passed through to an upstream (see the module)."""
    http = cast("HTTPScope", scope)
    raw_path, _, inline_query = http.get("raw_path", b"").partition(b"?")  # test clients put the query there
    method = http["method"]
    if not raw_path.startswith(_PREFIX):  # Litestar's mount also matches `/v1beta/...`
        raise NotFoundError(f"Invalid URL ({method} {raw_path.decode('latin-1')})")
    tally = tally_of(scope)
    tally.endpoint, tally.route = family_of(raw_path), PASSTHROUGH_LABEL
    resources: Resources = scope["app"].state.resources
    identity = identity_of(scope)
    if identity is not None and not identity.key.may_use_route(PASSTHROUGH_LABEL):  # files, batches: spend too
        raise resources.access_or_fail().forbidden(f"the pass-through ('{PASSTHROUGH_LABEL}' is not among its routes)")
    query = http["query_string"] or inline_query
    path = UpstreamPath.from_client(raw_path[len(_PREFIX) - 1 :].decode("latin-1"), query.decode("latin-1"))
    upstream = _upstream_of(resources.current)
    request_headers = dict(http["headers"])
    headers = forwardable_headers(http["headers"], request_id_of(scope))
    for name in _KEPT_REQUEST_HEADERS:
        if name in request_headers:
            headers[name.decode()] = request_headers[name].decode("latin-1")
    headers["accept-encoding"] = "identity"  # bodies Turnout can read, to redact what it relays (see `_relay`)
    client = _Client(receive, tally)
    body = client.body() if _has_body(request_headers) else None
    if body is None:
        client.watch()
    started = time.perf_counter()
    try:
        async with client.guard(), upstream.forward(method, path, headers, body) as answer:
            await _relay(send, answer, upstream.redactor, tally, _biller(resources, tally))
    except ClientDisconnectedError:
        tally.status = 499  # also when the response had begun: the client did not get all of it
    finally:
        tally.upstream_seconds = time.perf_counter() - started


passthrough: ASGIRouteHandler = asgi("/v1", is_mount=True, copy_scope=False, name="passthrough")(_passthrough)
"""The handler, mounted on `/v1` (every method)."""


async def pass_through(scope: Scope, receive: Receive, send: Send) -> None:
    """Pass on a request that a handler under `/v1/` takes but does not serve (another method, a deeper path)."""
    await _passthrough(scope, receive, send)


def _upstream_of(generation: Generation) -> Upstream:
    name = generation.settings.deployment.passthrough
    return generation.first_upstream() if name is None else generation.upstreams[name]


def _biller(resources: Resources, tally: Tally) -> Callable[[bytes], Awaitable[None]] | None:
    """What charges a `/v1/batches` answer for the batch it shows (`proxy.batches`); None for other families."""
    if tally.endpoint != "batches":
        return None
    return functools.partial(resources.batches.relayed, resources.current.pipeline.prices, tally)


def _has_body(headers: Mapping[bytes, bytes]) -> bool:
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


class _Client:
    """The client's side of one pass-through: its body as it arrives, and whether it has gone away.

    The body is read by the HTTP client (in its own task, as it sends it); once it is all in, a watcher
    reads on, for the disconnect. Either way a client that leaves cancels the request's task at once,
    which closes the upstream connection; `guard()` then turns that cancellation into
    `ClientDisconnectedError`. (`proxy.asgi.unless_gone` watches only once a body is read whole.)
    """

    __slots__ = ("_gone", "_receive", "_tally", "_task", "_watcher")

    def __init__(self, receive: Receive, tally: Tally) -> None:
        self._receive = receive
        self._tally = tally  # keeps the body for the traffic log, when it is on
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a task under an ASGI server
        self._task = task
        self._gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def body(self) -> AsyncIterator[bytes]:
        """The request body's chunks as they arrive; then the watch for a disconnect begins."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._left()
                raise ClientDisconnectedError
            chunk = cast("bytes", message.get("body", b""))
            if chunk:
                self._tally.keep_received(chunk)
                yield chunk
            if not message.get("more_body", False):
                self.watch()
                return

    def watch(self) -> None:
        """Watch for the client's disconnect from now on (its body, if any, is all in)."""
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._left()

    def _left(self) -> None:
        self._gone = True
        self._task.cancel()

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the block unless the client leaves: then it is cancelled, and `ClientDisconnectedError` raised."""
        try:
            yield
        except asyncio.CancelledError:
            if not self._gone:
                raise
            self._task.uncancel()
            raise ClientDisconnectedError from None
        except ProxyError:
            if self._gone:  # the upload broke off because the client left, not because of the upstream
                raise ClientDisconnectedError from None
            raise
        finally:
            if self._watcher is not None:
                self._watcher.cancel()


def _relayed_headers(answer: Forwarded, redactor: Redactor, *, length: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's headers that a client acts on (`content-length` only with `length`), secrets removed."""
    relayed = []
    for raw_name, value in answer.headers:
        name = raw_name.lower()
        if name == b"content-length" and not length:
            continue
        if (name in _RELAYED or name.startswith(_RELAYED_PREFIXES)) and name not in _NOT_RELAYED:
            relayed.append((name, redactor.text(value.decode("latin-1")).encode("latin-1")))
    return relayed


def _is_json(answer: Forwarded) -> bool:
    return any(name.lower() == b"content-type" and b"json" in value.lower() for name, value in answer.headers)


def _without_type(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name != b"content-type"]


def _wrapped(status: int, body: bytes, redactor: Redactor) -> bytes:
    """An error body that is not JSON (an HTML page, `404: Not Found`) as OpenAI's error, its text quoted."""
    text = redactor.text(body[:_QUOTED].decode("utf-8", "replace")).strip()
    message = f"The upstream answered {status}" + (f": {text}" if text else ".")
    return error_body(message, "invalid_request_error" if status < 500 else "api_error")


def _redactable(answer: Forwarded) -> bool:
    """An error or a JSON answer, small enough, and not compressed: read whole to remove secrets from it."""
    fields = {name.lower(): value for name, value in answer.headers}
    if fields.get(b"content-encoding", b"identity").lower() != b"identity":
        return False
    if answer.status < 400 and b"json" not in fields.get(b"content-type", b"").lower():
        return False
    declared = fields.get(b"content-length")
    return declared is None or not declared.isdigit() or int(declared) <= REDACTED_UP_TO


async def _relay(
    send: Send,
    answer: Forwarded,
    redactor: Redactor,
    tally: Tally,
    bill: Callable[[bytes], Awaitable[None]] | None = None,
) -> None:
    """Send the upstream's answer on: its status, the headers that matter, its body as it comes.

    A small error or JSON answer has Turnout's secrets removed (a fresh `content-length` then); an error that
    is not JSON becomes an OpenAI error with the same status, its text quoted. Anything
    larger, or of another type, is relayed as it came, unredacted: it is the client's own data (a file it
    uploaded, audio made for it), and a secret removed from the middle of a stream would change a length
    already sent. An upstream that breaks off after the headers leaves the response cut short, as it was.
    `bill` charges a whole JSON answer of 200 (a batch's) before it is sent, with the cost headers.
    """
    if _redactable(answer):
        head, whole = await answer.head(REDACTED_UP_TO)
        if whole:
            body, relayed = redactor.data(head), _relayed_headers(answer, redactor, length=False)
            if answer.status >= 400 and not _is_json(answer):  # a proxy's or a server's own page: made OpenAI's
                body, relayed = _wrapped(answer.status, body, redactor), [*_without_type(relayed), _JSON_TYPE]
            elif bill is not None and answer.status == 200:
                await bill(head)
                relayed += [(name.encode(), value.encode()) for name, value in tally.cost_items()]
            headers = [*relayed, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        first = [head]
    else:
        first = []
    headers = _relayed_headers(answer, redactor, length=True)
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    try:
        for chunk in first:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        async for chunk in answer.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except ProxyError as exc:  # the response has begun: nothing to do but leave it incomplete
        logger.warning("passthrough: %s", exc.message)
        tally.upstream_error(PASSTHROUGH_LABEL, "midstream")
        tally.failure = exc
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})
