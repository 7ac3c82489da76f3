"""Relaying a route's stream to the client: first-event peek, usage tee and strip, errors as events.

Endpoint-agnostic: where the usage is, how the stream ends and how an error is framed come from the
call's codec (`proxy.endpoints`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from proxy.endpoints.base import Codec
from proxy.wire.errors import ProxyError
from proxy.wire.schemas import Usage

__all__ = ["EndHook", "Relay", "UsageHook", "open_relay", "replay_relay"]

logger = logging.getLogger("turnout.streaming")


UsageHook = Callable[[Usage, str | None], None]
"""Called with the usage a stream reported and the model that answered (when the event names it)."""
EndHook = Callable[[ProxyError | None], bytes]
"""Called once when a stream ends (with the error that broke it off, if one did); returns SSE bytes to send
just before the final end event (or before the error event): comments, say, or nothing."""


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
    source: AsyncGenerator[bytes, None],
    codec: Codec[Any],
    *,
    wants_usage: bool,
    on_usage: UsageHook,
    on_end: EndHook | None = None,
) -> Relay:
    """Start relaying a route's stream (runs of whole SSE events) to the client.

    Waits for the first events so that an error before them raises here, to be answered as a normal
    JSON error with its status. The returned relay then yields each run of events as it arrives (one
    write each, passed on as the upstream framed them), hands the usage to `on_usage`, drops the
    usage-only event when the caller did not ask for it, turns a later error into a final error event,
    and always ends with the codec's end event, just after what `on_end` returns.
    """
    try:
        first = await anext(source, None)
    except BaseException:
        await source.aclose()
        raise
    relay = _relay(first, source, codec, wants_usage=wants_usage, on_usage=on_usage, on_end=on_end)
    return Relay(relay, source)


async def _relay(
    events: bytes | None,
    source: AsyncGenerator[bytes, None],
    codec: Codec[Any],
    *,
    wants_usage: bool,
    on_usage: UsageHook,
    on_end: EndHook | None,
) -> AsyncGenerator[bytes, None]:
    done, end, last = False, codec.end_event, b""
    take_usage, ends = codec.take_usage, codec.ends  # once a chunk: looked up once
    async with contextlib.aclosing(source):
        try:
            while events is not None:
                events, usage, model = take_usage(events, keep=wants_usage)
                if usage is not None:
                    on_usage(usage, model)
                done = ends(events)
                if done and on_end is not None:  # an end marker (`[DONE]`) stays last; without one, the comments are
                    events = events[: len(events) - len(end)] + on_end(None) + end
                if events:
                    yield events
                    last = events
                events = await anext(source, None)
        except ProxyError as exc:
            logger.warning("stream broke off after its first event: %s", exc.message)
            # A codec whose events are numbered (Responses' `sequence_number`) numbers its error after the last.
            after = getattr(codec, "error_event_after", None)
            error: bytes = after(exc, last) if after is not None else codec.error_event(exc)
            yield (on_end(exc) if on_end is not None else b"") + error + end
            return
    if not done:
        yield (on_end(None) if on_end is not None else b"") + end


async def _once(events: bytes) -> AsyncGenerator[bytes, None]:
    yield events


def replay_relay(events: bytes) -> Relay:
    """A relay of a stream already at hand (a cached answer): all its events in one write, its end last."""
    source = _once(events)
    return Relay(source, source)
