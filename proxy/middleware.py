"""ASGI middleware: request id, timing, in-flight count, and the request's tally to the recorder at its end.

Never routing or business logic: it starts each request's `Tally`, notes the status and when the first
and last bytes went out, and hands the finished tally to the `Recorder` (the metrics and the access log).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import COST_HEADER, Tally
from proxy.tracing import Tracing

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "request_id_of", "tally_of"]

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()
_STATE_KEY = "turnout_request_id"
_TALLY_KEY = "turnout_tally"
_NOT_COUNTED = frozenset({"/metrics"})
_CLIENT_GONE = 499
"""The status recorded for a request whose client left before any response (nginx's convention)."""
# A caller's id is kept when it is a plain token: it ends up in logs and upstream headers.
_VALID_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class _RequestIds:
    """Unique ids without a syscall each: a random prefix per process, then a counter.

    `uuid4()` reads `os.urandom` every time: about a tenth of a proxied request's time in a profile.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return f"{self._prefix}{next(self._counter):012x}".encode()


def request_id_of(scope: Scope) -> str:
    """The request id that `RequestIdMiddleware` put in this request's scope."""
    return str(scope["state"][_STATE_KEY])


def tally_of(scope: Scope) -> Tally:
    """This request's `Tally`, started by `RequestIdMiddleware` (a detached one outside it)."""
    tally: Tally | None = scope.get("state", {}).get(_TALLY_KEY)
    return tally if tally is not None else Tally(request_id=request_id_of(scope))


class RequestIdMiddleware:
    """Take the caller's `x-request-id` (when it is a plain token) or create one; echo it on the response.

    Raw ASGI rather than Litestar's middleware base: it runs on every request, including the framework's
    own 404s, and costs one header scan. It also times the request, adds the cost header to a chat
    answer whose cost is known when its headers leave and, with a `recorder`, counts the request in
    flight and hands it to the recorder when its response has ended. With `tracing`, it also starts and ends the
    request's span (`proxy.tracing`).
    """

    def __init__(
        self, app: ASGIApp, *, recorder: Recorder | None = None, tracing: Tracing | None = None, capture: bool = False
    ) -> None:
        self.app = app
        self._ids = _RequestIds()
        self._recorder = recorder
        self._tracing = tracing
        self._capture = capture
        """Keep each response's body (and a passed-through request's) for the traffic log (`Tally.sent`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = _caller_id(scope) or self._ids.next()
        tally = Tally(request_id=request_id.decode(), started=time.perf_counter())
        state = scope.setdefault("state", {})
        state[_STATE_KEY], state[_TALLY_KEY] = tally.request_id, tally
        header = (_HEADER, request_id)
        if self._capture:
            tally.sent, tally.received = [], []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                tally.status = message["status"]
                headers = [*message.get("headers", ()), header]
                if tally.routed:
                    headers += _cost_headers(tally)
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                if tally.first_byte_at is None:
                    tally.first_byte_at = time.perf_counter()
                if tally.sent is not None:
                    tally.keep_sent(message.get("body", b""))
            await send(message)

        recorder = self._recorder
        path = scope["path"]  # as it came: the router rewrites it for a mount (the pass-through's)
        in_flight = recorder.in_flight if recorder is not None and path not in _NOT_COUNTED else None
        if in_flight is not None:
            in_flight.inc()
        trace = self._tracing.begin(scope, tally) if self._tracing is not None else None
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            tally.ended_at = time.perf_counter()
            if in_flight is not None:
                in_flight.dec()
            self._record(tally, scope["method"], path)
            if trace is not None:
                trace.end(scope["method"], path)

    def _record(self, tally: Tally, method: str, path: str) -> None:
        if tally.status == 0:
            tally.status = _CLIENT_GONE
        if self._recorder is not None:
            self._recorder.request(tally, method, path)


def _caller_id(scope: HTTPScope) -> bytes:
    """The caller's `x-request-id` when it is a plain token, else b""."""
    for name, value in scope["headers"]:
        if name == _HEADER:
            return value if _VALID_ID.fullmatch(value) else b""
    return b""


def _cost_headers(tally: Tally) -> list[tuple[bytes, bytes]]:
    """The cost headers of a chat response: its cost when known now, 0 for an error (nothing was billed)."""
    items = tally.cost_items()
    if items:
        return [(name.encode(), value.encode()) for name, value in items]
    if tally.status >= 400:
        return [(COST_HEADER.encode(), b"0")]
    return []
