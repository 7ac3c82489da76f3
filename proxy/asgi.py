"""Raw ASGI I/O for the chat hot path: read a body within its limit, send JSON, relay a stream until disconnect.

The chat endpoint is a Litestar `@asgi` handler rather than a `@post` one: on this machine Litestar's
request/response layer costs about 80 µs a request (4,900 against 8,200 requests/s for the same
hello-world), a large share of a proxy's budget. Routing, exception handlers and the lifespan stay
Litestar's; errors raised here before the response starts go through the app's exception handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol, TypeVar, cast

from litestar.types import Receive, Send

from proxy.wire.errors import InvalidRequestError, RequestTooLargeError

__all__ = [
    "WATCH_AFTER",
    "ClientDisconnectedError",
    "ClosableChunks",
    "read_body",
    "send_json",
    "send_stream",
    "unless_gone",
]

T = TypeVar("T")

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClosableChunks(Protocol):
    """Chunks of a response body that can be closed before they run out (an async generator, a `Relay`)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Release what produces the chunks."""


class ClientDisconnectedError(Exception):
    """The client went away before its answer: there is nobody to answer."""


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(f"The request body is larger than the limit of {limit} bytes.")


async def read_body(headers: Mapping[bytes, bytes], receive: Receive, limit: int) -> bytes:
    """The whole request body, refused with a 413 as soon as it is known to exceed `limit` bytes."""
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("The Content-Length header is not a number.")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        chunk = cast("bytes", message.get("body", b""))
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, body: bytes, headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
    """Send a complete JSON response."""
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*_JSON_HEADERS, length, *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


WATCH_AFTER = 0.5
"""Seconds a request that is not streamed runs before its client's disconnect is watched for (see `unless_gone`)."""


@contextlib.asynccontextmanager
async def _until_gone(receive: Receive, after: float = 0.0) -> AsyncIterator[None]:
    """Run the block in this task unless the client disconnects: then the task is cancelled, at once.

    With `after`, the watch starts only once the block has run that long (a client gone before is seen
    then): most blocks end before it, and their requests pay for a timer instead of a watching task.

    Raises:
        ClientDisconnectedError: the client left before the block was done.
    """
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - always inside a task under an ASGI server
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    watchers: list[asyncio.Task[None]] = []

    async def watch_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        task.cancel()

    def watch() -> None:  # a scoped watcher, cancelled below whatever happens; not a background task
        watchers.append(loop.create_task(watch_disconnect()))

    timer = loop.call_later(after, watch) if after > 0 else None
    if timer is None:
        watch()
    try:
        yield
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        task.uncancel()
        raise ClientDisconnectedError from None
    finally:
        if timer is not None:
            timer.cancel()
        for watcher in watchers:
            watcher.cancel()


async def unless_gone(receive: Receive, work: Awaitable[T]) -> T:
    """What `work` (awaited in this task) gives, unless the client disconnects first: then it is cancelled.

    The upstream call under way is cancelled with it (aiohttp closes its connection), so a client that
    timed out leaves nothing running behind it, and nothing is charged but what the upstream reported.
    The watch starts after `WATCH_AFTER` seconds (a task per request cost 15% of the requests/s at c64;
    a client gone earlier is let go then) and ends before the answer is sent.

    Raises:
        ClientDisconnectedError: the client left before `work` was done.
    """
    async with _until_gone(receive, after=WATCH_AFTER):
        return await work


async def send_stream(
    send: Send,
    receive: Receive,
    chunks: ClosableChunks,
    headers: list[tuple[bytes, bytes]],
    ends: Callable[[bytes], bool],
) -> None:
    """Send an SSE response chunk by chunk as `chunks` yields them; the chunk that `ends` the stream ends the body.

    When the client disconnects, the relay is cancelled at once and `chunks` closed, which closes the
    upstream request (ASGI servers drop writes to a gone client silently, so only `receive` tells).
    """
    with contextlib.suppress(ClientDisconnectedError):
        async with _until_gone(receive), contextlib.aclosing(chunks):
            await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *headers]})
            more = True
            async for chunk in chunks:
                # A stream's last event goes out with the end of the body, in one write.
                more = not ends(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
