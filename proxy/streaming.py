"""Relaying a route's stream to the client: first-event peek, usage tee and strip, errors as SSE events."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from proxy.wire.answers import ChunkView, UnreadableAnswerError, read_answer
from proxy.wire.errors import ProxyError, UpstreamError
from proxy.wire.schemas import Usage
from proxy.wire.sse import DONE_EVENT, encode_event, event_data, split_events

__all__ = ["EndHook", "Relay", "UsageHook", "open_relay", "replay_relay", "take_usage"]

logger = logging.getLogger("turnout.streaming")


UsageHook = Callable[[Usage, str | None], None]
"""Called with the usage a stream reported and the model that answered (when the chunk names it)."""
EndHook = Callable[[ProxyError | None], bytes]
"""Called once when a stream ends (with the error that broke it off, if one did); returns SSE bytes to send
just before the final `data: [DONE]` (or before the error event): comments, say, or nothing."""


# A usage object, not the `"usage": null` every chunk carries once usage is on; escaped text cannot match.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def take_usage(events: bytes, on_usage: UsageHook) -> None:
    """Hand the usage in a run of SSE events, if it holds any, to `on_usage` (for streams read to their end).

    Raises:
        UpstreamError: a chunk with a usage object cannot be read (see `_take_usage`).
    """
    if _USAGE_OBJECT.search(events):
        _take_usage(events, wants_usage=True, on_usage=on_usage)


def _take_usage(events: bytes, *, wants_usage: bool, on_usage: UsageHook) -> bytes:
    """Hand the usage in `events` to `on_usage`; drop the usage-only chunk unless the caller asked for it.

    A usage chunk that cannot be read (a count out of range, say) is the upstream's fault, as an unreadable
    completion is: the stream ends with an `upstream_error` (routes check every chunk first; this holds
    for any source).
    """
    kept = []
    for event in split_events(events):
        data = event_data(event)
        if data is not None and _USAGE_OBJECT.search(data):
            try:
                _, chunk = read_answer(data, ChunkView)
            except UnreadableAnswerError as exc:
                raise UpstreamError(f"The upstream sent a usage chunk that Turnout cannot read: {exc}.") from None
            if chunk.usage is not None:
                on_usage(chunk.usage, chunk.model)
                if not chunk.choices and not wants_usage:
                    continue
        kept.append(event + b"\n\n")
    return b"".join(kept)


class Relay:
    """A route's stream as SSE bytes; `aclose()` closes the route's stream whether iteration began or not."""

    __slots__ = ("_events", "_source")

    def __init__(self, events: AsyncGenerator[bytes, None], source: AsyncGenerator[bytes, None]) -> None:
        self._events = events
        self._source = source

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    async def aclose(self) -> None:
        """Stop relaying and close the route's stream (and with it the upstream request)."""
        await self._events.aclose()
        await self._source.aclose()


async def open_relay(
    source: AsyncGenerator[bytes, None], *, wants_usage: bool, on_usage: UsageHook, on_end: EndHook | None = None
) -> Relay:
    """Start relaying a route's stream (runs of whole SSE events) to the client.

    Waits for the first events so that an error before them raises here, to be answered as a normal
    JSON error with its status. The returned relay then yields each run of events as it arrives (one
    write each, passed on as the upstream framed them), hands the usage to `on_usage`, drops the
    usage-only chunk when the caller did not ask for it, turns a later error into a final
    `data: {"error": ...}` event, and always ends with `data: [DONE]`, just after what `on_end` returns.
    """
    try:
        first = await anext(source, None)
    except BaseException:
        await source.aclose()
        raise
    return Relay(_relay(first, source, wants_usage=wants_usage, on_usage=on_usage, on_end=on_end), source)


async def _relay(
    events: bytes | None,
    source: AsyncGenerator[bytes, None],
    *,
    wants_usage: bool,
    on_usage: UsageHook,
    on_end: EndHook | None,
) -> AsyncGenerator[bytes, None]:
    done = False
    async with contextlib.aclosing(source):
        try:
            while events is not None:
                if _USAGE_OBJECT.search(events):  # once a stream: the rest passes untouched
                    events = _take_usage(events, wants_usage=wants_usage, on_usage=on_usage)
                done = events.endswith(DONE_EVENT)
                if done and on_end is not None:
                    events = events[: -len(DONE_EVENT)] + on_end(None) + DONE_EVENT
                if events:
                    yield events
                events = await anext(source, None)
        except ProxyError as exc:
            logger.warning("stream broke off after its first event: %s", exc.message)
            yield (on_end(exc) if on_end is not None else b"") + encode_event(exc.body()) + DONE_EVENT
            return
    if not done:
        yield (on_end(None) if on_end is not None else b"") + DONE_EVENT


async def _once(events: bytes) -> AsyncGenerator[bytes, None]:
    yield events


def replay_relay(events: bytes) -> Relay:
    """A relay of a stream already at hand (a cached answer): all its events in one write, `[DONE]` last."""
    source = _once(events)
    return Relay(source, source)
