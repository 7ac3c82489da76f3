"""Slow, silent, too many and malformed clients against the real `turnout serve`, with raw sockets (issue 11).

The Turnout here has short limits (idle 1 s, headers 2 s, body 2 s); what is asserted is that each bad
connection is closed, or answered in OpenAI form, and that the server logs it as the client's doing:
never an ERROR, never a traceback. Every time bound is a hang guard: on a server without the limits
these connections stay open and the guard fails the test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.conftest import RunningProcess, running, sdk_client, start_turnout, turnout_env
from tests.openapi import validate
from tests.rawhttp import (
    CHAT_BODY,
    converse,
    error_of,
    eventually,
    hold_silent,
    hold_slow_body,
    hold_slow_head,
    post,
    responses,
)

LIMITS = {
    "TURNOUT_IDLE_TIMEOUT": "1",
    "TURNOUT_HEADER_TIMEOUT": "2",
    "TURNOUT_BODY_TIMEOUT": "2",
    "TURNOUT_MAX_HEADER_BYTES": "8192",
}
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def strict(simulator: RunningProcess) -> Iterator[RunningProcess]:
    """A Turnout with short connection limits, forwarding to the shared simulator."""
    with running(start_turnout(turnout_env(simulator, **LIMITS))) as process:
        yield process


@pytest.fixture
def clean_log(strict: RunningProcess) -> Iterator[None]:
    """Fail the test when the server logged an ERROR or a traceback while it ran."""
    before = len(strict.stderr())
    yield
    log = strict.stderr()[before:]
    assert " ERROR " not in log, log
    assert "Traceback" not in log, log


def openai_error(raw: bytes, status: int) -> dict[str, Any]:
    body = error_of(raw, status)
    validate("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    return error


def chat_works(origin: str) -> None:
    with sdk_client(origin) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.choices[0].message.content
        with client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) as stream:
            assert any(chunk.choices and chunk.choices[0].delta.content for chunk in stream)


# --- point 6: slow and silent clients ------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_log")
async def test_silent_connections_are_closed(strict: RunningProcess) -> None:
    closed = await asyncio.gather(*(hold_silent(strict.port) for _ in range(200)))
    assert set(closed) == {b""}  # closed without a response: nothing was asked


@pytest.mark.usefixtures("clean_log")
async def test_headers_at_a_byte_a_second_get_a_408(strict: RunningProcess) -> None:
    answers = await asyncio.gather(*(hold_slow_head(strict.port, every=0.25) for _ in range(50)))
    for raw in answers:
        error = openai_error(raw, 408)
        assert error["code"] == "request_timeout"
        assert error["message"] == "The request line and headers did not arrive within 2 s."


@pytest.mark.usefixtures("clean_log")
async def test_trickled_bodies_get_a_408(strict: RunningProcess) -> None:
    answers = await asyncio.gather(*(hold_slow_body(strict.port, every=0.25) for _ in range(20)))
    for raw in answers:
        assert openai_error(raw, 408)["message"] == "The request body did not arrive within 2 s."


@pytest.mark.usefixtures("clean_log")
async def test_normal_requests_succeed_while_slow_clients_are_held(strict: RunningProcess) -> None:
    held = [
        *(hold_silent(strict.port) for _ in range(500)),
        *(hold_slow_head(strict.port) for _ in range(50)),
        *(hold_slow_body(strict.port) for _ in range(20)),
    ]
    holding = asyncio.gather(*held)
    await asyncio.sleep(0.2)  # let them connect
    await asyncio.to_thread(chat_works, strict.origin)
    closed = await holding  # and every one of them is closed in the end
    assert len(closed) == 570


@pytest.fixture(scope="module")
def capped(simulator: RunningProcess) -> Iterator[RunningProcess]:
    """A Turnout that keeps at most 20 connections open, with long enough timeouts to hold them."""
    env = turnout_env(simulator, TURNOUT_MAX_CONNECTIONS="20", TURNOUT_IDLE_TIMEOUT="30", TURNOUT_HEADER_TIMEOUT="30")
    with running(start_turnout(env)) as process:
        yield process


async def test_connections_over_the_cap_get_a_503(capped: RunningProcess) -> None:
    streams = [await asyncio.open_connection("127.0.0.1", capped.port) for _ in range(20)]
    try:
        answers = await asyncio.gather(*(converse(capped.port, post("/v1/chat/completions", 0)) for _ in range(10)))
    finally:
        for _, writer in streams:
            writer.close()
    for raw in answers:
        error = openai_error(raw, 503)
        assert error["code"] == "too_many_connections"
        assert responses(raw)[0][1]["retry-after"] == "1"
    # The refused ones were never counted, and the held ones free their places when they go.
    await eventually(lambda: _answers_health(capped.port))
    await asyncio.to_thread(chat_works, capped.origin)
    assert "refused" in capped.stderr()
    assert " ERROR " not in capped.stderr()


def _answers_health(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 200")


# --- point 7: malformed HTTP ----------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
MALFORMED = {
    "bad Content-Length": post(CHAT, 2).replace(b"Length: 2", b"Length: 2x") + b"{}",
    "negative Content-Length": post(CHAT, 2).replace(b"Length: 2", b"Length: -2") + b"{}",
    "two Content-Lengths": post(CHAT, 2).replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n") + b"{}",
    "Content-Length with Transfer-Encoding": (
        post(CHAT, 2).replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n") + b"0\r\n\r\n"
    ),
    "unknown Transfer-Encoding": b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    "bad chunk size": b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "NUL in a header value": b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "space in a header name": b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n",
    "folded header": b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
    "CONNECT": b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n",
    "unknown method": b"BREW /v1/models HTTP/1.1\r\nHost: t\r\n\r\n",
    "garbage request line": b"\x00\x01\x02 nonsense\r\n\r\n",
    "TLS handshake on the plain port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)),
    "HTTP/2 prior knowledge": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bad HTTP version": b"GET /v1/models HTTP/9.9\r\nHost: t\r\n\r\n",
    "bare CR": b"GET /v1/models HTTP/1.1\rHost: t\r\n\r\n",
    "control character in the path": b"GET /v1/mo\x7fdels HTTP/1.1\r\nHost: t\r\n\r\n",
    "bad authority": b"GET http://[::1/v1/models HTTP/1.1\r\nHost: t\r\n\r\n",
}
TOO_LARGE = {
    "oversized header": b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "many headers": b"GET /v1/models HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n",
    "oversized URL": b"GET /v1/models/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
}


@pytest.mark.usefixtures("clean_log")
@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_http_gets_an_openai_400(strict: RunningProcess, request_bytes: bytes) -> None:
    error = openai_error(await converse(strict.port, request_bytes), 400)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_http_request"
    assert error["message"].startswith("Invalid HTTP request: ")
    assert b"\x00" not in error["message"].encode()


@pytest.mark.usefixtures("clean_log")
@pytest.mark.parametrize("request_bytes", TOO_LARGE.values(), ids=TOO_LARGE.keys())
async def test_an_oversized_head_gets_an_openai_431(strict: RunningProcess, request_bytes: bytes) -> None:
    error = openai_error(await converse(strict.port, request_bytes), 431)
    assert error["message"] == "The request line and headers are larger than the limit of 8192 bytes."


@pytest.mark.usefixtures("clean_log")
def test_malformed_http_is_logged_as_the_clients_error(strict: RunningProcess) -> None:
    before = len(strict.stderr())
    asyncio.run(converse(strict.port, MALFORMED["Content-Length with Transfer-Encoding"]))
    log = strict.stderr()[before:]
    assert "INFO turnout.http: client 127.0.0.1:" in log
    assert "invalid HTTP request (Transfer-Encoding can't be present with Content-Length): answered 400" in log
    assert "WARNING" not in log


@pytest.mark.usefixtures("clean_log")
async def test_a_post_with_an_h2c_upgrade_is_answered_with_its_body(strict: RunningProcess) -> None:
    """What `curl --http2 -d BODY http://...` sends: the parser skips an upgrade request's body."""
    upgrade = (
        b"\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    )
    raw = await converse(strict.port, post(CHAT, len(CHAT_BODY)).replace(b"\r\n\r\n", upgrade) + CHAT_BODY)
    [(status, headers, body)] = responses(raw)
    assert (status, headers["connection"]) == (200, "close"), raw
    validate("CreateChatCompletionResponse", json.loads(body))


# --- point 7: clients that leave mid-stream ------------------------------------------------------------------

STREAM_BODY = CHAT_BODY[:-1] + b',"stream":true}'
SLOW_STREAM = post(CHAT, len(STREAM_BODY)).replace(
    b"\r\n\r\n", b"\r\nx-simulated-chunk-interval-ms: 20\r\nx-simulated-chunks: 50\r\n\r\n"
)


@pytest.mark.usefixtures("clean_log")
@pytest.mark.parametrize("pipelined", [1, 2], ids=["one request", "two pipelined"])
@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_client_leaving_mid_stream_is_no_error(strict: RunningProcess, pipelined: int, reset: bool) -> None:
    ended = strict.stderr().count('"stream":true')
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", strict.port)) as sock:
            sock.sendall((SLOW_STREAM + STREAM_BODY) * pipelined)
            sock.settimeout(10)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the stream has started
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # Each running stream ends (its access log line is written) once the server has seen the client go.
    deadline = time.monotonic() + 10
    while strict.stderr().count('"stream":true') < ended + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert strict.stderr().count('"stream":true') == ended + 3  # the queued requests never ran
    chat_works(strict.origin)  # and the server goes on serving


def test_the_sdk_sees_the_limits_as_openai_errors(capped: RunningProcess) -> None:
    """What the official client makes of a 503 over the cap: an `InternalServerError` with the body."""
    held = [socket.create_connection(("127.0.0.1", capped.port)) for _ in range(20)]
    try:
        with sdk_client(capped.origin) as client, pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        for sock in held:
            sock.close()
    assert caught.value.status_code == 503
    assert caught.value.code == "too_many_connections"
