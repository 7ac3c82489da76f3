"""`proxy.streaming.open_relay`: usage tee and strip, errors before and after the first batch, closing."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from types import AsyncGeneratorType
from typing import cast

import pytest

from proxy.endpoints.chat import CHAT
from proxy.streaming import open_relay
from proxy.wire.errors import ProxyError, UpstreamError, UpstreamRateLimitError
from proxy.wire.schemas import Usage
from proxy.wire.sse import DONE, DONE_EVENT, encode_event

ROLE = b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"}}]}'
HELLO = b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello"}}]}'
STOP = b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
USAGE_ONLY = (
    b'{"id":"c1","object":"chat.completion.chunk","choices":[],'
    b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}'
)
USAGE = Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18)
NULL_USAGE = (
    b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"!"}}],"usage":null}'
)
CONTENT_AND_USAGE = (
    b'{"id":"c1","choices":[{"index":0,"delta":{"content":"x"}}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'
)


class Source:
    """A route's stream stand-in: yields each batch of payloads as whole SSE events, then raises `error`."""

    def __init__(self, batches: list[list[bytes]], error: BaseException | None = None) -> None:
        self.batches = batches
        self.error = error
        self.yielded = 0
        self.closed = False
        self.generator = self._run()

    def is_closed(self) -> bool:
        """Whether the generator has run its `finally` (a call, so that mypy does not narrow it)."""
        return self.closed

    async def _run(self) -> AsyncGenerator[bytes, None]:
        try:
            for batch in self.batches:
                self.yielded += 1
                yield b"".join(encode_event(payload) for payload in batch)
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


class UsageLog:
    def __init__(self) -> None:
        self.calls: list[Usage] = []

    def __call__(self, usage: Usage, model: str | None = None) -> None:
        self.calls.append(usage)


async def relay_all(source: Source, *, wants_usage: bool, usage_log: UsageLog | None = None) -> list[bytes]:
    relay = await open_relay(source.generator, CHAT, wants_usage=wants_usage, on_usage=usage_log or UsageLog())
    return [chunk async for chunk in relay]


async def test_a_source_ending_with_done_gets_no_second_done():
    source = Source([[ROLE], [HELLO, DONE]])
    out = await relay_all(source, wants_usage=False)
    assert out == [encode_event(ROLE), encode_event(HELLO) + DONE_EVENT]


async def test_usage_only_chunk_is_dropped_when_not_asked_for():
    usage_log = UsageLog()
    source = Source([[ROLE], [HELLO], [STOP], [USAGE_ONLY]])
    out = await relay_all(source, wants_usage=False, usage_log=usage_log)
    assert out == [encode_event(ROLE), encode_event(HELLO), encode_event(STOP), DONE_EVENT]
    assert usage_log.calls == [USAGE]
    assert source.is_closed() is True


async def test_usage_only_chunk_is_kept_when_asked_for():
    usage_log = UsageLog()
    source = Source([[HELLO], [STOP], [USAGE_ONLY]])
    out = await relay_all(source, wants_usage=True, usage_log=usage_log)
    assert out == [encode_event(HELLO), encode_event(STOP), encode_event(USAGE_ONLY), DONE_EVENT]
    assert usage_log.calls == [USAGE]


async def test_usage_only_chunk_in_a_batch_with_others_is_stripped_from_that_batch():
    usage_log = UsageLog()
    out = await relay_all(Source([[HELLO], [STOP, USAGE_ONLY]]), wants_usage=False, usage_log=usage_log)
    assert out == [encode_event(HELLO), encode_event(STOP), DONE_EVENT]
    assert usage_log.calls == [USAGE]


@pytest.mark.parametrize("wants_usage", [False, True])
async def test_null_usage_passes_through(wants_usage):
    usage_log = UsageLog()
    out = await relay_all(Source([[NULL_USAGE]]), wants_usage=wants_usage, usage_log=usage_log)
    assert out == [encode_event(NULL_USAGE), DONE_EVENT]
    assert usage_log.calls == []


async def test_usage_on_a_chunk_with_choices_is_kept_and_reported():
    usage_log = UsageLog()
    out = await relay_all(Source([[CONTENT_AND_USAGE]]), wants_usage=False, usage_log=usage_log)
    assert out == [encode_event(CONTENT_AND_USAGE), DONE_EVENT]
    assert usage_log.calls == [Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)]


async def test_a_payload_mentioning_usage_that_is_not_json_passes_through():
    odd = b'{"text": "usage", "usage"'
    out = await relay_all(Source([[odd]]), wants_usage=False)
    assert out == [encode_event(odd), DONE_EVENT]


async def test_an_empty_stream_still_ends_with_done():
    source = Source([])
    assert await relay_all(source, wants_usage=False) == [DONE_EVENT]
    assert source.is_closed() is True


async def test_a_batch_of_two_payloads_is_one_write():
    out = await relay_all(Source([[ROLE, HELLO], [STOP]]), wants_usage=False)
    assert out == [encode_event(ROLE) + encode_event(HELLO), encode_event(STOP), DONE_EVENT]
    assert out[0] == b"data: " + ROLE + b"\n\ndata: " + HELLO + b"\n\n"


async def test_an_error_before_the_first_batch_raises_from_open_relay():
    error = UpstreamRateLimitError("Rate limit reached", headers={"retry-after": "3"})
    source = Source([], error=error)
    with pytest.raises(UpstreamRateLimitError) as excinfo:
        await open_relay(source.generator, CHAT, wants_usage=False, on_usage=UsageLog())
    assert excinfo.value is error
    assert source.is_closed() is True
    assert cast("AsyncGeneratorType[list[bytes], None]", source.generator).ag_frame is None


async def test_an_error_after_the_first_batch_becomes_a_final_error_event():
    error = UpstreamError("The upstream failed with status 500: boom")
    source = Source([[ROLE], [HELLO]], error=error)
    relay = await open_relay(source.generator, CHAT, wants_usage=False, on_usage=UsageLog())
    out = [chunk async for chunk in relay]
    assert out == [encode_event(ROLE), encode_event(HELLO), b"data: " + error.body() + b"\n\n" + DONE_EVENT]
    assert json.loads(out[2].removesuffix(DONE_EVENT).removeprefix(b"data: ")) == {
        "error": {
            "message": "The upstream failed with status 500: boom",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    assert source.is_closed() is True


async def test_the_error_event_never_contains_a_key():
    source = Source([[HELLO]], error=ProxyError("failed with Bearer sk-abcdef0123456789"))
    out = await relay_all(source, wants_usage=False)
    assert len(out) == 2
    assert out[1].endswith(DONE_EVENT)
    assert b"sk-abcdef" not in out[1]
    error = json.loads(out[1].removesuffix(DONE_EVENT).removeprefix(b"data: "))
    assert error["error"]["message"] == "failed with [redacted]"


async def test_closing_the_relay_early_closes_the_source():
    source = Source([[ROLE], [HELLO], [STOP]])
    relay = await open_relay(source.generator, CHAT, wants_usage=False, on_usage=UsageLog())
    assert await anext(aiter(relay)) == encode_event(ROLE)
    assert source.is_closed() is False
    await relay.aclose()
    assert source.is_closed() is True
    assert source.yielded == 1


async def test_closing_the_relay_before_reading_it_closes_the_source():
    # The client can go away between open_relay() and the first write: the upstream must be released.
    source = Source([[ROLE], [HELLO]])
    relay = await open_relay(source.generator, CHAT, wants_usage=False, on_usage=UsageLog())
    try:
        await relay.aclose()
        assert source.is_closed() is True
    finally:
        await source.generator.aclose()


class EndLog:
    """Records the end hook's and the cut hook's calls: (kind, error, data events relayed)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ProxyError | None, int]] = []

    def end(self, error: ProxyError | None, sent: int) -> bytes:
        self.calls.append(("end", error, sent))
        return b""

    def cut(self, sent: int) -> None:
        self.calls.append(("cut", None, sent))


async def test_a_relay_closed_before_the_end_reports_the_events_it_relayed() -> None:
    source, log = Source([[ROLE], [HELLO], [HELLO, HELLO], [STOP, DONE]]), EndLog()
    relay = await open_relay(
        source.generator, CHAT, wants_usage=False, on_usage=UsageLog(), on_end=log.end, on_cut=log.cut
    )
    iterator = aiter(relay)
    await anext(iterator)
    await anext(iterator)
    await anext(iterator)
    await relay.aclose()  # the client left after four data events
    assert log.calls == [("cut", None, 4)]
    assert source.is_closed()


async def test_a_finished_or_broken_relay_calls_the_end_hook_and_never_the_cut_hook() -> None:
    finished, log = Source([[ROLE], [HELLO, DONE]]), EndLog()
    relay = await open_relay(
        finished.generator, CHAT, wants_usage=False, on_usage=UsageLog(), on_end=log.end, on_cut=log.cut
    )
    assert [chunk async for chunk in relay]
    await relay.aclose()
    assert log.calls == [("end", None, 3)]  # role, hello and [DONE]: the data events up to the end
    error = UpstreamError("gone")
    broken, log = Source([[ROLE], [HELLO]], error=error), EndLog()
    relay = await open_relay(
        broken.generator, CHAT, wants_usage=False, on_usage=UsageLog(), on_end=log.end, on_cut=log.cut
    )
    assert [chunk async for chunk in relay]
    assert log.calls == [("end", error, 2)]


async def test_a_relay_closed_before_anyone_iterated_it_reports_a_cut_with_nothing_sent() -> None:
    source, log = Source([[ROLE], [HELLO, DONE]]), EndLog()
    relay = await open_relay(
        source.generator, CHAT, wants_usage=False, on_usage=UsageLog(), on_end=log.end, on_cut=log.cut
    )
    await relay.aclose()
    await relay.aclose()  # once only
    assert log.calls == [("cut", None, 0)]
    assert source.is_closed()
