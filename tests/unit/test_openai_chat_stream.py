"""`OpenAIChatRoute.stream`: whole events out of arbitrary reads, [DONE], upstream error events, cut streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest

from proxy.endpoints.chat import CHAT
from proxy.wire.errors import UpstreamError
from proxy.wire.redaction import Redactor
from proxy.wire.sse import DONE_EVENT
from routes import Call, OpenAIChatRoute

A = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
B = b'data: {"choices":[{"delta":{"content":"say \\"error\\": no"}}]}\n\n'
ERROR = b'data: {"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}\n\n'
RAW = b'{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"hi"}]}'


class FakeUpstream:
    """Stands in for `Upstream` at the route's boundary: serves the given reads as the response body."""

    name = "fake"

    def __init__(self, reads: list[bytes], secrets: tuple[str, ...] = ()) -> None:
        self.reads = reads
        self.redactor = Redactor(secrets)
        self.sent: bytes = b""
        self.closed = False

    def timeout(self, total: float | None) -> object:
        return object()

    async def post_stream(
        self, path: str, body: bytes, headers: Mapping[str, str], timeouts: object = None
    ) -> AsyncGenerator[bytes, None]:
        self.sent = body
        try:
            for read in self.reads:
                yield read
        finally:
            self.closed = True


async def collect(reads: list[bytes], secrets: tuple[str, ...] = ()) -> tuple[list[bytes], FakeUpstream]:
    upstream = FakeUpstream(reads, secrets)
    route = OpenAIChatRoute("r", upstream)  # type: ignore[arg-type]  # duck-typed stand-in
    call = Call(endpoint=CHAT, body=CHAT.decode(RAW), headers={})
    out: list[Any] = [events async for events in (await route.stream(call)).events]
    return out, upstream


async def test_reads_are_cut_into_whole_events() -> None:
    out, upstream = await collect([A[:10], A[10:] + B[:5], B[5:], b"data: [DONE]\n\n"])
    assert out == [A, B, DONE_EVENT]
    assert upstream.closed
    assert b'"include_usage":true' in upstream.sent


async def test_events_before_done_in_the_same_read_are_kept_and_the_upstream_closed() -> None:
    out, upstream = await collect([A + B + b"data:[DONE]\n\n" + b"data: ignored\n\n"])
    assert out == [A + B + DONE_EVENT]  # one read, one run: the relay writes it at once
    assert upstream.closed


async def test_crlf_streams_are_normalised() -> None:
    out, _ = await collect([A.replace(b"\n", b"\r\n") + b"data: [DONE]\r", b"\n\r\n"])
    assert out == [A, DONE_EVENT]  # A was whole in the first read, [DONE] in the second


async def test_an_upstream_error_event_raises_after_the_events_before_it() -> None:
    upstream = FakeUpstream([A + ERROR + B])
    route = OpenAIChatRoute("r", upstream)  # type: ignore[arg-type]
    stream = (await route.stream(Call(endpoint=CHAT, body=CHAT.decode(RAW), headers={}))).events
    assert await anext(stream) == A
    with pytest.raises(UpstreamError, match="overloaded"):
        await anext(stream)
    assert upstream.closed


async def test_content_mentioning_error_is_not_an_error() -> None:
    out, _ = await collect([B + b"data: [DONE]\n\n"])
    assert out == [B + DONE_EVENT]


async def test_a_stream_cut_before_done_is_an_error() -> None:
    with pytest.raises(UpstreamError, match=r"before \[DONE\]"):
        await collect([A, B[:7]])


SECRET = "abc123XYZ-secret-0f1e2d3c"  # noqa: S105 - a test value


async def test_a_secret_cut_between_two_reads_is_still_redacted() -> None:
    event = b'data: {"choices":[{"delta":{"content":"key ' + SECRET.encode() + b'"}}]}\n\n'
    cut = event.index(b"secret")
    out, _ = await collect([event[:cut], event[cut:] + b"data: [DONE]\n\n"], (SECRET,))
    assert SECRET.encode() not in b"".join(out)
    assert out == [event.replace(SECRET.encode(), b"[redacted]") + DONE_EVENT]


async def test_an_upstream_error_event_echoing_a_secret_raises_without_it() -> None:
    error = b'data: {"error":{"message":"bad key ' + SECRET.encode() + b'","code":"' + SECRET.encode() + b'"}}\n\n'
    upstream = FakeUpstream([A + error], (SECRET,))
    route = OpenAIChatRoute("r", upstream)  # type: ignore[arg-type]
    stream = (await route.stream(Call(endpoint=CHAT, body=CHAT.decode(RAW), headers={}))).events
    assert await anext(stream) == A
    with pytest.raises(UpstreamError) as caught:
        await anext(stream)
    assert SECRET not in caught.value.message
    assert SECRET.encode() not in caught.value.body()
