"""`TurnoutHttpProtocol` in a real uvicorn server in this process, on a loopback port, with a small ASGI app.

The attacks themselves run against `turnout serve` in tests/e2e/test_connections.py; here each rule is
driven on its own with short limits, and the uvicorn internals the protocol relies on are pinned.
Every time bound below is a hang guard, never an assertion on how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl

from proxy.protocol import BODY_RATE, ConnectionLimits, ServerConnections, TurnoutHttpProtocol
from tests.rawhttp import GUARD, Step, converse, eventually, post, responses, trickle
from tests.rawhttp import error_of as full_error_of

# The sha256 (first 16 hex digits) of each piece of uvicorn the protocol overrides, calls or copies the
# behaviour of, as of uvicorn 0.55.0. A change means: read the new code against proxy/protocol.py, then
# update the digest here.
PINNED = {
    "HttpToolsProtocol.__init__": "4f08999410347141",
    "HttpToolsProtocol.connection_made": "6efb565ff3d36b91",
    "HttpToolsProtocol.connection_lost": "c91a4c9bf2e29c55",
    "HttpToolsProtocol.eof_received": "5652627579a02369",
    "HttpToolsProtocol._unset_keepalive_if_required": "00a6a4e47214e68e",
    "HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",
    "HttpToolsProtocol.on_message_begin": "96d377fdc7c2baef",
    "HttpToolsProtocol.on_url": "37be44e962b04ca8",
    "HttpToolsProtocol.on_header": "1e86ebb6cea0458c",
    "HttpToolsProtocol.on_headers_complete": "1ea8589acfad92d8",
    "HttpToolsProtocol._start_asgi_task": "8d0189e65525db42",
    "HttpToolsProtocol.on_body": "dba9c32aeba35b6a",
    "HttpToolsProtocol.on_message_complete": "1fbad42dc31fc01f",
    "HttpToolsProtocol.on_response_complete": "64e254f28e389e76",
    "HttpToolsProtocol.shutdown": "d7351fa33f00d430",
    "HttpToolsProtocol.timeout_keep_alive_handler": "8b53bf5f2e202970",
    "RequestResponseCycle.__init__": "4d2f220910c33c12",
    "RequestResponseCycle.run_asgi": "0f33f2449a444bc2",
    "RequestResponseCycle.send": "abdd8601b326a8da",
    "RequestResponseCycle.receive": "8124ae006be71184",
}


def digest(qualified: str) -> str:
    owner, name = qualified.split(".")
    source = inspect.getsource(getattr(getattr(httptools_impl, owner), name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_the_uvicorn_internals_it_relies_on_are_unchanged() -> None:
    changed = [name for name, expected in PINNED.items() if digest(name) != expected]
    assert not changed, (
        f"uvicorn {uvicorn.__version__} changed {changed}: TurnoutHttpProtocol (proxy/protocol.py) overrides or "
        "depends on them. Read the new code, adapt the protocol, then update PINNED."
    )


def test_the_parser_reports_a_callback_failure_with_its_cause() -> None:
    """The protocol tells a client's bad URL (400) from a bug (500) by the exception httptools chains."""

    class Callbacks:
        def on_headers_complete(self) -> None:
            raise KeyError("bug")

    parser = httptools.HttpRequestParser(Callbacks())
    with pytest.raises(httptools.HttpParserCallbackError) as caught:
        parser.feed_data(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(caught.value.__context__, KeyError)
    with pytest.raises(httptools.HttpParserUpgrade):
        httptools.HttpRequestParser(object()).feed_data(b"CONNECT a:1 HTTP/1.1\r\n\r\n")


# --- a uvicorn server with the protocol, in this loop -----------------------------------------------------------


@dataclass
class App:
    """The ASGI app behind the server: records what it saw."""

    events: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/early":  # answers before reading the body, as a 404 or a 413 does
            await self.respond(send, 404, b'{"early":true}')
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.events.append(f"{path}: disconnect while reading")
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/stream":
            await self.stream(path, receive, send)
            return
        await self.respond(send, 200, json.dumps({"received": len(body)}).encode())

    async def stream(self, path: str, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(200):
            await send({"type": "http.response.body", "body": b"chunk\n", "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.events.append(f"{path}: done")

    @staticmethod
    async def respond(send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Running:
    port: int
    app: App
    state: Any


LIMITS = ConnectionLimits(
    max_connections=50, max_header_bytes=4096, idle_timeout=0.3, header_timeout=0.6, body_timeout=0.6
)


@contextlib.asynccontextmanager
async def serving(limits: ConnectionLimits = LIMITS) -> AsyncIterator[Running]:
    app = App()
    protocol = functools.partial(TurnoutHttpProtocol, limits=limits, shared=ServerConnections())
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=cast("type[asyncio.Protocol]", protocol),
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await eventually(lambda: server.started)
    try:
        yield Running(server.servers[0].sockets[0].getsockname()[1], app, server.server_state)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, GUARD)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async with serving() as server:
        yield server


GET = b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"


def error_of(raw: bytes, status: int) -> dict[str, Any]:
    error: dict[str, Any] = full_error_of(raw, status)["error"]
    return error


# --- deadlines ----------------------------------------------------------------------------------------------


async def test_a_silent_connection_is_closed_without_a_response(running: Running) -> None:
    assert await converse(running.port) == b""


async def test_bare_line_ends_do_not_keep_a_connection_open(running: Running) -> None:
    steps: list[Step] = [b"\r\n", 0.05] * 100
    assert await converse(running.port, *steps) == b""


async def test_headers_at_a_byte_at_a_time_get_a_408(running: Running) -> None:
    error = error_of(await converse(running.port, *trickle(GET[:-2], 0.05)), 408)
    assert error["code"] == "request_timeout"
    assert "headers did not arrive within 0.6 s" in error["message"]


async def test_a_trickled_body_gets_a_408_and_the_app_sees_the_client_go(running: Running) -> None:
    error = error_of(await converse(running.port, post("/body", 100), *trickle(b"x" * 100, 0.05)), 408)
    assert "request body did not arrive within 0.6 s" in error["message"]
    assert running.app.events == ["/body: disconnect while reading"]


async def test_a_request_answered_early_gets_no_second_response_when_its_body_stalls(running: Running) -> None:
    raw = await converse(running.port, post("/early", 100), b"x")
    [(status, _, body)] = responses(raw)
    assert (status, body) == (404, b'{"early":true}')


async def test_a_large_body_on_a_slow_link_earns_time(running: Running) -> None:
    """Four 64 KiB pieces, 0.25 s apart: longer than body_timeout, well within its per-byte extension."""
    piece = b"x" * BODY_RATE
    steps: list[Step] = [piece, 0.25] * 4
    raw = await converse(running.port, post("/body", 4 * BODY_RATE), *steps)
    assert responses(raw)[0][2] == json.dumps({"received": 4 * BODY_RATE}).encode()


# For requests one after another on a connection: an idle timeout that a pause of the test's loop cannot reach.
KEPT_ALIVE = ConnectionLimits(50, 4096, idle_timeout=2.0, header_timeout=2.0, body_timeout=2.0)


async def test_a_kept_alive_connection_serves_on_then_is_closed_when_idle() -> None:
    async with serving(KEPT_ALIVE) as server:
        raw = await converse(server.port, GET, 0.1, GET)
    assert [status for status, _, _ in responses(raw)] == [200, 200]


# --- sizes and the cap -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [1, 8], ids=["one write", "many writes"])
async def test_a_head_over_the_limit_gets_a_431(running: Running, chunks: int) -> None:
    head = b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    size = len(head) // chunks + 1
    pieces = [step for i in range(0, len(head), size) for step in (head[i : i + size], 0.01)]
    error = error_of(await converse(running.port, *pieces), 431)
    assert error["code"] == "request_header_fields_too_large"
    assert "limit of 4096 bytes" in error["message"]


async def test_a_head_just_under_the_limit_is_served(running: Running) -> None:
    head = b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 3900 + b"\r\nConnection: close\r\n\r\n"
    assert responses(await converse(running.port, head))[0][0] == 200


async def test_connections_over_the_cap_get_a_503_and_are_not_counted() -> None:
    async with serving(ConnectionLimits(3, 4096, idle_timeout=30, header_timeout=30, body_timeout=30)) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        await eventually(lambda: len(server.state.connections) == 3)
        raw = await converse(server.port, GET)
        for _, writer in held:
            writer.close()
        await eventually(lambda: not server.state.connections)
        after = await converse(server.port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    error = error_of(raw, 503)
    assert error["code"] == "too_many_connections"
    assert responses(raw)[0][1]["retry-after"] == "1"
    assert responses(after)[0][0] == 200


# --- malformed HTTP ------------------------------------------------------------------------------------------

MALFORMED = {
    "bad content-length": b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n1",
    "content-length and chunked": post("/body", 2)[:-2] + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "NUL in a header": b"GET /ok HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "unknown method": b"BREW /ok HTTP/1.1\r\nHost: t\r\n\r\n",
    "CONNECT": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "bad chunk size": b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "TLS to a plain port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "HTTP/2 prior knowledge": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_http_gets_an_openai_400_logged_at_info(
    running: Running, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        error = error_of(await converse(running.port, request_bytes), 400)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_http_request"
    assert error["message"].startswith("Invalid HTTP request: ")
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.name for record in caplog.records if "answered 400" in record.getMessage()] == ["turnout.http"]


async def test_a_bug_in_a_parser_callback_is_a_500_logged_with_its_traceback(
    running: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: TurnoutHttpProtocol, url: bytes) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(TurnoutHttpProtocol, "on_url", broken)
    with caplog.at_level(logging.INFO):
        error = error_of(await converse(running.port, GET), 500)
    assert error["message"] == "The server had an error while processing your request."
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


UPGRADE = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"


async def test_an_upgrade_request_is_answered_plainly_and_the_connection_closed(running: Running) -> None:
    upgrade = b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    raw = await converse(running.port, upgrade + GET)
    [(status, headers, _)] = responses(raw)
    assert (status, headers["connection"]) == (200, "close")


@pytest.mark.parametrize("split", [0, 5, 40], ids=["with the head", "split", "after the head"])
async def test_the_body_of_an_upgrade_request_reaches_the_app(running: Running, split: int) -> None:
    """`curl --http2 -d ... http://...` sends `Upgrade: h2c` with its POST; the parser skips such a body."""
    head = post("/body", 40).replace(b"\r\n\r\n", b"\r\n" + UPGRADE + b"\r\n")
    body = b"x" * 40
    raw = await converse(running.port, head + body[:split], 0.05, body[split:] + GET)
    [(status, headers, answer)] = responses(raw)
    assert (status, headers["connection"], answer) == (200, "close", b'{"received": 40}')


async def test_an_upgrade_request_with_a_chunked_body_gets_a_400(running: Running) -> None:
    head = b"POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" + UPGRADE + b"\r\n"
    error = error_of(await converse(running.port, head + b"3\r\nabc\r\n0\r\n\r\n"), 400)
    assert "send the request without Upgrade" in error["message"]


# --- a client that leaves ----------------------------------------------------------------------------------


async def test_a_client_leaving_with_a_request_queued_stops_the_running_one(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn marks only the last parsed request disconnected; the running one wrote on into a closed socket."""
    stream = post("/stream", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(stream + stream)
    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(GUARD):
            await reader.readuntil(b"chunk\n")
        writer.close()
        await eventually(lambda: not running.state.tasks)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_requests_keep_working_after_all_that() -> None:
    async with serving(KEPT_ALIVE) as server:
        for steps in ([b"\x00garbage\r\n\r\n"], [post("/body", 10), b"x"], []):
            await converse(server.port, *steps)
        raw = await converse(server.port, post("/body", 3) + b"abc", 0.05, GET)
    assert [body for _, _, body in responses(raw)] == [b'{"received": 3}', b'{"received": 0}']
