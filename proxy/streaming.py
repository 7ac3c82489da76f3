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

__all__ = ["CutHook", "EndHook", "Relay", "UsageHook", "open_relay", "replay_relay"]

logger = logging.getLogger("turnout.streaming")


UsageHook = Callable[[Usage, str | None], None]
"""Called with the usage a stream reported and the model that answered (when the event names it)."""
EndHook = Callable[[ProxyError | None, int], bytes]
"""Called once when a stream ends (with the error that broke it off, if one did, and the count of `data:` events
relayed); returns SSE bytes to send just before the final end event (or before the error event): comments, say."""
CutHook = Callable[[int], None]
"""Called instead of the `EndHook` when the relay is closed before the stream ended (the client left), with the
count of `data:` events relayed until then."""


class Relay:
    """A route's stream as SSE bytes; `aclose()` closes the route's stream whether iteration began or not."""

    __slots__ = ("_events", "_on_cut", "_source")

    def __init__(
        self, events: AsyncGenerator[bytes, None], source: AsyncGenerator[bytes, None], on_cut: CutHook | None = None
    ) -> None:
        self._events = events
        self._source = source
        self._on_cut = on_cut
        """Called (with 0 events sent) when the relay is closed before anyone iterated it: the client left first."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._on_cut = None  # from here on, the relay's own end (or cut) is reported by the relay
        return self._events

    async def aclose(self) -> None:
        """Stop relaying and close the route's stream (and with it the upstream request)."""
        await self._events.aclose()
        await self._source.aclose()
        if self._on_cut is not None:
            on_cut, self._on_cut = self._on_cut, None
            on_cut(0)


async def open_relay(
    source: AsyncGenerator[bytes, None],
    codec: Codec[Any],
    *,
    wants_usage: bool,
    on_usage: UsageHook,
    on_end: EndHook | None = None,
    on_cut: CutHook | None = None,
) -> Relay:
    """Start relaying a route's stream (runs of whole SSE events) to the client.

    Waits for the first events so that an error before them raises here, to be answered as a normal
    JSON error with its status. The returned relay then yields each run of events as it arrives (one
    write each, passed on as the upstream framed them), hands the usage to `on_usage`, drops the
    usage-only event when the caller did not ask for it, turns a later error into a final error event,
    and always ends with the codec's end event, just after what `on_end` returns. Closed before that (the
    client left), it calls `on_cut` instead.
    """
    try:
        first = await anext(source, None)
    except BaseException:
        await source.aclose()
        raise
    relay = _relay(first, source, codec, wants_usage=wants_usage, on_usage=on_usage, on_end=on_end, on_cut=on_cut)
    return Relay(relay, source, on_cut)


async def _relay(
    events: bytes | None,
    source: AsyncGenerator[bytes, None],
    codec: Codec[Any],
    *,
    wants_usage: bool,
    on_usage: UsageHook,
    on_end: EndHook | None,
    on_cut: CutHook | None,
) -> AsyncGenerator[bytes, None]:
    done, end, last, sent, ended = False, codec.end_event, b"", 0, False
    take_usage, ends = codec.take_usage, codec.ends  # once a chunk: looked up once
    try:
        async with contextlib.aclosing(source):
            try:
                while events is not None:
                    events, usage, model = take_usage(events, keep=wants_usage)
                    if usage is not None:
                        on_usage(usage, model)
                    done = ends(events)
                    if done:
                        ended = True
                        if on_end is not None:  # an end marker (`[DONE]`) stays last; without one, the comments are
                            events = events[: len(events) - len(end)] + on_end(None, sent + events.count(_DATA)) + end
                    if events:
                        sent += events.count(_DATA)  # counted as sent when handed over
                        yield events
                        last = events
                    events = await anext(source, None)
            except ProxyError as exc:
                logger.warning("stream broke off after its first event: %s", exc.message)
                # A codec whose events are numbered (Responses' `sequence_number`) numbers its error after the last.
                after = getattr(codec, "error_event_after", None)
                error: bytes = after(exc, last) if after is not None else codec.error_event(exc)
                ended = True
                yield (on_end(exc, sent) if on_end is not None else b"") + error + end
                return
        if not done:
            ended = True
            yield (on_end(None, sent) if on_end is not None else b"") + end
    finally:
        if not ended and on_cut is not None:
            on_cut(sent)


_DATA = b"data:"


async def _once(events: bytes) -> AsyncGenerator[bytes, None]:
    yield events


def replay_relay(events: bytes) -> Relay:
    """A relay of a stream already at hand (a cached answer): all its events in one write, its end last."""
    source = _once(events)
    return Relay(source, source)
