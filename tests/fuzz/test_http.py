"""Malformed HTTP on raw sockets, through the real server: an OpenAI-format 4xx (or a close), never an ERROR log.

Each case is bytes no HTTP library would send: a broken Content-Length, Content-Length with
Transfer-Encoding, bad chunked framing, a NUL or a CR in a header, CONNECT and unknown methods, a
request line that is not one, HTTP/0.9, headers and request lines of 64 KiB, bodies cut short, a
client that goes away mid-body or mid-stream. What a client gets back is OpenAI-format JSON with a
4xx (a 505 too for an HTTP version the server does not speak), or, where HTTP leaves no way to answer
(HTTP/0.9, a request stream that ended), a closed connection without a byte. Where the framing of the
request is lost, the server closes the connection after answering (RFC 9112, 6.3), so that nothing
after it is read as another request. The server logs a client's mistake as such, never at ERROR or
with a traceback: each case is followed by a sentinel request whose access-log line marks the end of
what the case made the server log.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from dataclasses import dataclass

import pytest

from tests.fuzz.checks import error_problems, header_problems
from tests.fuzz.conftest import StatusTable, Target, log_problems
from tests.fuzz.rawhttp import EXCHANGE_TIMEOUT, exchange, request

pytestmark = pytest.mark.fuzz

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
POST = "POST /v1/chat/completions HTTP/1.1"
HOST = "Host: 127.0.0.1"
JSON = "Content-Type: application/json"
LENGTH = f"Content-Length: {len(CHAT)}"
CHUNKED = "Transfer-Encoding: chunked"
ROW = "raw socket: malformed HTTP"
# The start of a TLS 1.2 ClientHello: what a client configured for https:// sends first.
TLS_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\x00\x00\x02\x00\x2f\x01\x00"


@dataclass(frozen=True)
class Malformed:
    """One malformed request and what HTTP lets a server do with it."""

    name: str
    data: bytes
    may_close: bool = False
    """Closing without a byte is right too (HTTP/0.9 has no status line; a request stream that ended, no reader)."""
    framing_lost: bool = False
    """The body's length is unknowable: the server must close after answering."""
    half_close: bool = False
    """The client ends its side of the connection after sending."""
    versions: bool = False
    """A 505 (HTTP Version Not Supported) is right too."""


CASES = [
    Malformed(
        "content-length-not-a-number", request(POST, HOST, JSON, "Content-Length: abc", body=CHAT), framing_lost=True
    ),
    Malformed("content-length-negative", request(POST, HOST, JSON, "Content-Length: -1", body=CHAT), framing_lost=True),
    Malformed(
        "content-length-beyond-64-bits",
        request(POST, HOST, JSON, f"Content-Length: {2**70}", body=CHAT),
        framing_lost=True,
    ),
    Malformed(
        "content-length-twice-differing",
        request(POST, HOST, JSON, "Content-Length: 3", LENGTH, body=CHAT),
        framing_lost=True,
    ),
    Malformed(
        "content-length-list",
        request(POST, HOST, JSON, f"Content-Length: {len(CHAT)}, {len(CHAT) + 1}", body=CHAT),
        framing_lost=True,
    ),
    Malformed(
        "content-length-with-transfer-encoding",  # CL.TE smuggling: a second request hides in the "body"
        request(
            POST, HOST, JSON, "Content-Length: 5", CHUNKED, body=b"0\r\n\r\n" + request("GET /v1/models HTTP/1.1", HOST)
        ),
        framing_lost=True,
    ),
    Malformed(
        "transfer-encoding-not-chunked",
        request(POST, HOST, JSON, "Transfer-Encoding: gzip", body=CHAT),
        framing_lost=True,
    ),
    Malformed(
        "chunk-size-not-hex",
        request(POST, HOST, JSON, CHUNKED, body=b"zz\r\n" + CHAT + b"\r\n0\r\n\r\n"),
        framing_lost=True,
    ),
    Malformed(
        "chunk-longer-than-its-size",
        request(POST, HOST, JSON, CHUNKED, body=b"3\r\n" + CHAT + b"\r\n0\r\n\r\n"),
        framing_lost=True,
    ),
    Malformed(
        "chunk-size-beyond-64-bits",
        request(POST, HOST, JSON, CHUNKED, body=b"f" * 24 + b"\r\n" + CHAT),
        framing_lost=True,
    ),
    Malformed("nul-in-header-value", request("GET /v1/models HTTP/1.1", HOST, "X-Team: da\x00ta")),
    Malformed("cr-in-header-value", request("GET /v1/models HTTP/1.1", HOST, "X-Team: da\rta")),
    Malformed("space-in-header-name", request("GET /v1/models HTTP/1.1", HOST, "X Team: data")),
    Malformed("header-without-colon", request("GET /v1/models HTTP/1.1", HOST, "X-Team data")),
    Malformed("connect", request("CONNECT api.openai.com:443 HTTP/1.1", "Host: api.openai.com:443")),
    Malformed("unknown-method", request("BREW /v1/chat/completions HTTP/1.1", HOST, JSON, LENGTH, body=CHAT)),
    Malformed("lower-case-method", request("get /v1/models HTTP/1.1", HOST)),
    Malformed("garbage-request-line", b"hello there, server\r\n\r\n"),
    Malformed("tls-client-hello", TLS_HELLO),
    Malformed("control-character-in-target", request("GET /v1/mo\x01dels HTTP/1.1", HOST)),
    Malformed("unknown-http-version", request("GET /v1/models HTTP/1.7", HOST), versions=True),
    Malformed("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", versions=True),
    Malformed("http-0.9", b"GET /v1/models\r\n", may_close=True, half_close=True),
    Malformed("header-of-64-kib", request("GET /v1/models HTTP/1.1", HOST, "X-Team: " + "a" * 65536)),
    Malformed("request-line-of-64-kib", request(f"GET /v1/models/{'a' * 65536} HTTP/1.1", HOST)),
    Malformed(
        "body-shorter-than-content-length",
        request(POST, HOST, JSON, "Content-Length: 500", body=CHAT),
        may_close=True,
        half_close=True,
    ),
    Malformed(
        "chunked-body-without-last-chunk",
        request(POST, HOST, JSON, CHUNKED, body=b"%x\r\n" % len(CHAT) + CHAT + b"\r\n"),
        may_close=True,
        half_close=True,
    ),
    Malformed("blank-lines-only", b"\r\n\r\n\r\n", may_close=True, half_close=True),
]


def _problems(case: Malformed, target: Target) -> tuple[str, list[str]]:
    """Send `case`; return the outcome for the table and everything wrong with the answer."""
    result = exchange(target.port, case.data, half_close=case.half_close, wait_close=case.framing_lost)
    if result.reply is None:
        return "closed", [] if case.may_close else ["the server closed the connection without answering"]
    reply = result.reply
    found = [f"{p.kind} {p.detail}".strip() for p in header_problems(reply, None) + error_problems(reply)]
    if not (400 <= reply.status < 500 or (case.versions and reply.status == 505)):
        found.insert(0, f"status {reply.status}, not a 4xx")
    if case.framing_lost and not result.closed:
        found.append(f"the connection stayed open after the answer (for {EXCHANGE_TIMEOUT} s)")
    if result.after:
        found.append(f"a second response to one request (smuggled): {result.after[:120]!r}")
    return str(reply.status), found


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_http_gets_an_openai_error_and_no_error_log(
    plain_target: Target, case: Malformed, status_table: StatusTable
) -> None:
    plain_target.new_log()
    started = time.monotonic()
    outcome, found = _problems(case, plain_target)
    row = status_table.row(plain_target.name, ROW)
    row.statuses[outcome] += 1
    row.seconds += time.monotonic() - started
    found += [f"server log: {line}" for line in log_problems(plain_target.sync())]

    if found:
        pytest.fail("\n".join(found), pytrace=False)


def _abort(sock: socket.socket) -> None:
    """Close with a reset, as a client that crashed or lost its network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_gone_mid_body_is_no_error(plain_target: Target, status_table: StatusTable) -> None:
    request_id = f"fuzz-gone-{uuid.uuid4().hex}"
    plain_target.new_log()
    sock = socket.create_connection(("127.0.0.1", plain_target.port), timeout=EXCHANGE_TIMEOUT)
    sock.sendall(request(POST, HOST, JSON, "Content-Length: 500", f"x-request-id: {request_id}", body=CHAT))
    _abort(sock)
    status_table.row(plain_target.name, "raw socket: client gone").statuses["reset mid-body"] += 1

    # Its own access-log line first: whatever the server logs about the request comes with or before it.
    assert log_problems(plain_target.wait_for(request_id) + plain_target.sync()) == []


def test_a_client_gone_mid_stream_is_no_error(plain_target: Target, status_table: StatusTable) -> None:
    body = CHAT.replace(b'"messages"', b'"stream":true,"messages"')
    request_id = f"fuzz-gone-{uuid.uuid4().hex}"
    headers = (
        HOST,
        JSON,
        f"Content-Length: {len(body)}",
        "x-simulated-chunk-interval-ms: 100",
        f"x-request-id: {request_id}",
    )
    plain_target.new_log()
    sock = socket.create_connection(("127.0.0.1", plain_target.port), timeout=EXCHANGE_TIMEOUT)
    sock.sendall(request(POST, *headers, body=body))
    received = b""
    while b"\ndata: " not in received:  # the headers and at least the first event
        chunk = sock.recv(65536)
        assert chunk, f"the stream ended before its first event: {received!r}"
        received += chunk
    _abort(sock)
    status_table.row(plain_target.name, "raw socket: client gone").statuses["reset mid-stream"] += 1

    assert received.startswith(b"HTTP/1.1 200 ")
    assert log_problems(plain_target.wait_for(request_id) + plain_target.sync()) == []
