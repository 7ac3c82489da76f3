"""Relaying a route's stream to the client: first-event peek, usage tee and strip, errors as SSE events."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import msgspec

from proxy.errors import ProxyError
from proxy.schemas import Usage
from proxy.sse import DONE_EVENT, encode_event

__all__ = ["Relay", "open_relay"]

logger = logging.getLogger("turnout.streaming")


class _ChunkView(msgspec.Struct):
    choices: list[msgspec.Raw] = []
    usage: Usage | None = None


_CHUNK = msgspec.json.Decoder(_ChunkView)


def _usage_of(payload: bytes) -> tuple[Usage | None, bool]:
    """The usage a chunk carries, and whether the chunk is nothing but the final usage chunk."""
    if b'"usage"' not in payload:  # most chunks: no decoding at all
        return None, False
    try:
        chunk = _CHUNK.decode(payload)
    except msgspec.DecodeError:
        return None, False
    return chunk.usage, chunk.usage is not None and not chunk.choices


class Relay:
    """A route's stream as SSE bytes; `aclose()` closes the route's stream whether iteration began or not."""

    __slots__ = ("_batches", "_events")

    def __init__(self, events: AsyncGenerator[bytes, None], batches: AsyncGenerator[list[bytes], None]) -> None:
        self._events = events
        self._batches = batches

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events

    async def aclose(self) -> None:
        """Stop relaying and close the route's stream (and with it the upstream request)."""
        await self._events.aclose()
        await self._batches.aclose()


async def open_relay(
    batches: AsyncGenerator[list[bytes], None], *, wants_usage: bool, on_usage: Callable[[Usage], None]
) -> Relay:
    """Start relaying a route's stream (batches of `data` payloads) as SSE bytes.

    Waits for the first batch so that an error before it raises here, to be answered as a normal JSON
    error with its status. The returned relay then yields each batch as soon as it arrives (one
    write per batch), hands the usage to `on_usage`, drops the usage-only chunk when the caller did not
    ask for it, turns a later error into a final `data: {"error": ...}` event, and always ends with
    `data: [DONE]`.
    """
    try:
        first = await anext(batches, None)
    except BaseException:
        await batches.aclose()
        raise
    return Relay(_relay(first, batches, wants_usage=wants_usage, on_usage=on_usage), batches)


async def _relay(
    batch: list[bytes] | None,
    batches: AsyncGenerator[list[bytes], None],
    *,
    wants_usage: bool,
    on_usage: Callable[[Usage], None],
) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(batches):
        try:
            while batch is not None:
                events = []
                for payload in batch:
                    usage, usage_only = _usage_of(payload)
                    if usage is not None:
                        on_usage(usage)
                    if wants_usage or not usage_only:
                        events.append(encode_event(payload))
                if events:
                    yield b"".join(events)
                batch = await anext(batches, None)
        except ProxyError as exc:
            logger.warning("stream broke off after its first event: %s", exc.message)
            yield encode_event(exc.body())
    yield DONE_EVENT
