"""uvicorn's httptools protocol with Turnout's connection rules: deadlines, a connection cap, JSON errors.

uvicorn bounds nothing a client sends before the app sees a request (silent connections, trickled headers
and bodies, headers of any size; malformed HTTP answered in plain text). `TurnoutHttpProtocol` adds, per
connection (each holds its deadline; one sweep a server, every quarter of the shortest timeout and at
most every second, closes those past it: no timer per request or connection):

- `idle_timeout`: a connection with no request under way (new, or between keep-alive requests) is
  closed, without a response, when no request starts within it; bytes that start no request (bare
  CRLFs) do not extend it, as they do uvicorn's own keep-alive timer;
- `header_timeout`: a request's line and headers must arrive within it, counted from the request's
  first byte (for a connection's first request: from when it opened); else 408;
- `body_timeout`: a request's body must arrive within it from the end of its headers, plus one second
  for each `BODY_RATE` bytes received (a large body on a slow link is not cut); else 408;
- `max_header_bytes`: a larger head → 431; `max_connections`: one more is answered 503 and closed;

and answers malformed HTTP with an OpenAI-format 400, logged at INFO as the client's error. Each such
answer closes the connection: written, the sending side shut, then the input dropped for up to `LINGER`
seconds, so that the client reads it rather than a reset (where a response has started: no answer).
`tests/integration/test_protocol.py` pins the uvicorn internals this relies on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
from uvicorn.server import ServerState

from proxy.wire.errors import InvalidRequestError, ProxyError

__all__ = ["BODY_RATE", "LINGER", "ConnectionLimits", "ServerConnections", "TurnoutHttpProtocol"]

logger = logging.getLogger("turnout.http")

BODY_RATE = 64 * 1024
"""Bytes of request body that earn one more second of `body_timeout` (about 0.5 Mbit/s)."""
LINGER = 2.0
"""Seconds a connection closed with an error response keeps reading (and dropping) what the client sends."""
_REFUSALS_EVERY = 10.0  # seconds between two log lines about connections refused over the cap

# What the parser is waiting for on a connection; IDLE, HEAD and BODY have a deadline.
_IDLE, _HEAD, _BODY, _QUEUED, _BUSY, _CLOSING = range(6)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long and how much a client may take before its request reaches the app; see the module."""

    max_connections: int
    max_header_bytes: int
    idle_timeout: float
    header_timeout: float
    body_timeout: float


class _HeadTooLargeError(Exception):
    """Raised from a parser callback: the request line and headers are over `max_header_bytes`."""


def _error(status: int, message: str, code: str | None) -> bytes:
    error = InvalidRequestError if status < 500 else ProxyError
    return error(message, status_code=status, code=code).body()


class _Sweeper:
    """Every `every` seconds while a server has connections, expires those past their deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any], every: float) -> None:
        self._loop, self._connections, self._every = loop, connections, every
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_later(self._every, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        now = self._loop.time()
        for connection in tuple(self._connections):
            if isinstance(connection, TurnoutHttpProtocol) and connection._deadline <= now:
                connection._expire()
        if self._connections:
            self.start()


class ServerConnections:
    """What one server's connections share: their deadlines' sweep, the refusals (each worker unpickles its own)."""

    __slots__ = ("_logged_at", "_refused", "sweeper")

    def __init__(self) -> None:
        self.sweeper: _Sweeper | None = None
        self._refused, self._logged_at = 0, -math.inf

    def refused(self, limit: int) -> None:
        """Count a connection refused over the cap; log the count at most once a `_REFUSALS_EVERY` seconds."""
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _REFUSALS_EVERY:
            logger.warning("refused %d connection(s) over the limit of %d (max_connections)", self._refused, limit)
            self._refused, self._logged_at = 0, now


class TurnoutHttpProtocol(_Base):
    """One HTTP/1.1 connection: uvicorn's `HttpToolsProtocol` under `ConnectionLimits`.

    Give uvicorn `functools.partial(TurnoutHttpProtocol, limits=..., shared=ServerConnections())` as its
    `http` protocol.
    """

    # Per-connection state, from these class-level starting values (fewer stores for each new connection).
    _phase = _BUSY
    _deadline = math.inf
    """When the current phase's time is up: infinite in a phase without a deadline."""
    _linger: asyncio.TimerHandle | None = None
    _opened_at: float | None = None
    """When the connection opened, until its first request begins (its header deadline counts from it)."""
    _now = 0.0
    """The loop's time when the chunk being parsed arrived."""
    _chunk = _head_fed = _head_first = 0
    _discard = False
    """Read and drop all input: the connection is closing after an error or an ignored upgrade."""
    _raw_body = 0
    """Bytes still to come of an upgrade request's body, which the parser does not read."""
    _running: RequestResponseCycle | None = None
    """With requests queued (pipelining), the one whose app runs: `self.cycle` is the last one parsed."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
        shared: ServerConnections,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits, self._shared = limits, shared
        # Read on every request: plain attributes (and `_Base.x(self)`, not `super().x()`) keep it cheap.
        self._max_head = limits.max_header_bytes
        self._header_timeout = limits.header_timeout
        self._body_timeout = limits.body_timeout
        self._idle_timeout = limits.idle_timeout

    # --- connection -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection's idle deadline, or refuse it when the cap is reached."""
        if len(self.connections) >= self._limits.max_connections:
            self.transport = transport
            self._shared.refused(self._limits.max_connections)
            message = "Turnout has too many connections open; retry shortly."
            self._fail(503, _error(503, message, "too_many_connections"), headers=[(b"retry-after", b"1")])
            return
        _Base.connection_made(self, transport)
        now = self.loop.time()
        self._opened_at = now
        self._phase, self._deadline = _IDLE, now + min(self._idle_timeout, self._header_timeout)
        if self._shared.sweeper is None:
            every = min(max(min(self._idle_timeout, self._header_timeout, self._body_timeout) / 4, 0.01), 1.0)
            self._shared.sweeper = _Sweeper(self.loop, self.connections, every)
        self._shared.sweeper.start()

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell every cycle of the connection, not only the last parsed one, that the client is gone."""
        if self._running is not None or self.cycle is not None:  # a connection that had a request
            self._abandon()
        if self._linger is not None:
            self._linger.cancel()
        self._phase, self._deadline = _CLOSING, math.inf
        _Base.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; malformed HTTP and oversized heads are answered here, in OpenAI form."""
        if self._discard:
            return
        self._unset_keepalive_if_required()
        self._now = self.loop.time()
        if self._raw_body:
            self._take_raw_body(data)
            return
        self._chunk = size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._ignore_upgrade(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self._reject(exc)
            return
        phase = self._phase
        if phase == _BODY:  # a body goes on past this chunk: each BODY_RATE bytes earn it a second
            self._deadline += size / BODY_RATE
        elif phase == _HEAD:  # a head goes on past this chunk: bound what the parser accumulates
            self._head_fed += size
            if self._head_fed - self._head_first > self._max_head:
                self._head_too_large()

    # --- parser callbacks ----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request starts: its head has until `header_timeout` after this (or after the connection opened)."""
        _Base.on_message_begin(self)
        self._head_fed, self._head_first = 0, self._chunk
        start = self._now if self._opened_at is None else self._opened_at
        self._opened_at = None
        self._phase, self._deadline = _HEAD, start + self._header_timeout

    def on_headers_complete(self) -> None:
        """Check the head's size, hand the request to uvicorn, then start the body's deadline."""
        # The chunks this head came in bound its size: only a head that may be too large is measured.
        if self._head_fed + self._chunk > self._max_head and self._head_size() > self._max_head:
            raise _HeadTooLargeError
        running = self.cycle
        _Base.on_headers_complete(self)
        if self.pipeline:  # queued behind a running request; uvicorn stopped reading until it starts
            if self._running is None or self._running.response_complete:
                self._running = running
            self._phase, self._deadline = _QUEUED, math.inf
            return
        self._phase, self._deadline = _BODY, self._now + self._body_timeout

    def on_message_complete(self) -> None:
        """The request is in; wait for its response, or for the next request when it was answered already."""
        _Base.on_message_complete(self)
        if self.cycle.response_complete and not self.pipeline:  # answered early (a 404, a 413): idle now
            self._phase, self._deadline = _IDLE, self._now + self._idle_timeout
        else:
            self._phase, self._deadline = _BUSY, math.inf

    def on_response_complete(self) -> None:
        """A response has ended: the next queued request starts, or the connection is idle."""
        pipeline = self.pipeline
        if pipeline:  # uvicorn is about to start the oldest queued request
            self._running = pipeline[-1][0]
        queued = bool(pipeline)
        _Base.on_response_complete(self)
        phase = self._phase
        if self.transport.is_closing() or phase not in (_QUEUED, _BUSY):
            return
        if phase == _QUEUED and queued:  # the queued request now runs and its body is read
            self._phase, self._deadline = _BODY, self.loop.time() + self._body_timeout
        elif phase == _BUSY and not queued:
            self._phase, self._deadline = _IDLE, self.loop.time() + self._idle_timeout

    # --- deadlines -------------------------------------------------------------------------------------------

    def _expire(self) -> None:
        """The sweep found this connection past its deadline: close it, with a 408 when a request is under way."""
        phase = self._phase
        if self.transport.is_closing() or phase not in (_IDLE, _HEAD, _BODY):
            return
        if phase == _IDLE:
            self._log(logging.DEBUG, "idle connection closed")
            self._phase, self._deadline = _CLOSING, math.inf
            self._abandon()
            self.transport.close()
            return
        what = "request line and headers" if phase == _HEAD else "request body"
        limit = self._header_timeout if phase == _HEAD else self._body_timeout
        message = f"The {what} did not arrive within {limit:g} s."
        self._fail(408, _error(408, message, "request_timeout"), why=f"{what} not received within {limit:g} s")

    # --- errors ------------------------------------------------------------------------------------------

    def _reject(self, exc: httptools.HttpParserError) -> None:
        """Answer a parser error: the client's (400, 431) unless it is a bug in a callback (500, logged)."""
        cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
        if isinstance(cause, _HeadTooLargeError):
            self._head_too_large()
            return
        if not isinstance(cause, httptools.HttpParserError):
            logger.error("error while parsing a request", exc_info=cause)
            message = "The server had an error while processing your request."
            self._fail(500, _error(500, message, None))
            return
        if isinstance(cause, httptools.HttpParserInvalidMethodError):
            reason = "unknown method"
        elif isinstance(cause, httptools.HttpParserInvalidURLError):
            # uvicorn's own URL parsing fails in a callback with the URL in the message: never echoed.
            connect = self.scope is not None and self.scope.get("method") == "CONNECT"
            reason = "CONNECT is not supported" if connect else "invalid request target"
        elif self.parser.get_method() == b"PRI":
            reason = "HTTP/2 is not supported here, send HTTP/1.1"  # an HTTP/2 client without TLS
        else:
            reason = str(cause)  # llhttp's own reason: a fixed text, no bytes of the request
        message = f"Invalid HTTP request: {reason}."
        self._fail(400, _error(400, message, "invalid_http_request"), why=f"invalid HTTP request ({reason})")

    def _head_too_large(self) -> None:
        limit = self._max_head
        message = f"The request line and headers are larger than the limit of {limit} bytes."
        self._fail(431, _error(431, message, "request_header_fields_too_large"), why=f"request head over {limit} bytes")

    def _ignore_upgrade(self, rest: bytes) -> None:
        """An `Upgrade` request (h2c, websocket) is answered as a plain one, and the connection closed after it.

        The parser stops at an upgrade and skips the request's body (`curl --http2` sends one with a POST):
        a declared Content-Length is read here instead, from `rest` on.
        """
        self._log(logging.DEBUG, "upgrade request answered without upgrading; the connection closes after it")
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._discard = True
            self.transport.close()
            return
        cycle.keep_alive = False
        headers = dict(self.headers)
        if b"transfer-encoding" in headers:
            message = "A chunked body with an Upgrade header is not supported: send the request without Upgrade."
            self._fail(400, _error(400, message, "invalid_http_request"), why="upgrade request with a chunked body")
            return
        self._raw_body = int(headers.get(b"content-length", b"0"))  # digits: the parser checked them
        if not self._raw_body:
            self._discard = True
            return
        cycle.more_body = True  # uvicorn ended the body the parser skipped; its app has not run yet
        cycle.message_event.clear()
        self._phase, self._deadline = _BODY, self._now + self._body_timeout
        self._take_raw_body(rest)

    def _take_raw_body(self, data: bytes) -> None:
        piece = data[: self._raw_body]
        if piece:
            _Base.on_body(self, piece)
            self._raw_body -= len(piece)
            self._deadline += len(piece) / BODY_RATE
        if not self._raw_body:
            self.cycle.more_body = False
            self.cycle.message_event.set()
            self._phase, self._deadline, self._discard = _BUSY, math.inf, True

    def _fail(
        self, status: int, body: bytes, *, why: str = "", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """End the connection with this response, or without one where a response has started already.

        `why`, when given, is logged at INFO (a client's doing, not a server error).
        """
        # No response where one is under way, nor a second one to a request whose body is still coming.
        started = any(cycle.response_started and not cycle.response_complete for cycle in self._cycles()) or (
            self._phase in (_BODY, _QUEUED) and self.cycle is not None and self.cycle.response_started
        )
        if why:
            self._log(logging.INFO, f"{why}: {'connection closed' if started else f'answered {status}'}")
        self._abandon()
        self._discard = True
        if self.flow is not None:
            self.flow.resume_reading()  # to see the client's end, even where uvicorn had paused reading
        if not started:
            lines = [STATUS_LINE[status]]
            fields = [
                *self.server_state.default_headers,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or ()),
            ]
            lines += [b"%s: %s\r\n" % field for field in fields]
            self.transport.write(b"".join([*lines, b"\r\n", body]))
        self._phase, self._deadline = _CLOSING, math.inf
        if started or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # then read and drop until the client closes, or LINGER passes
        self._linger = self.loop.call_later(LINGER, self.transport.close)

    def _cycles(self) -> list[RequestResponseCycle]:
        """The running cycle, the last parsed one and the queued ones, each once."""
        cycles: list[RequestResponseCycle] = []
        for cycle in (self._running, self.cycle, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and all(cycle is not other for other in cycles):
                cycles.append(cycle)
        return cycles

    def _abandon(self) -> None:
        """Mark every unfinished cycle disconnected: its app reads `http.disconnect`, its writes are dropped."""
        for cycle in self._cycles():
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self.pipeline.clear()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _log(self, level: int, message: str) -> None:
        if logger.isEnabledFor(level):
            peer = "%s:%d" % self.client if self.client else "?"  # noqa: UP031 - uvicorn's own form
            logger.log(level, "client %s: %s", peer, message)
