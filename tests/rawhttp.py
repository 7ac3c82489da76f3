"""A raw-socket HTTP/1.1 client for the connection tests and the slow-client benchmark.

`converse()` plays a script of writes and pauses on one connection while reading everything the server
sends, until it closes; `responses()` splits what came back into responses; `error_of()` checks that it
is one OpenAI-format error that closes the connection. The `hold_*` coroutines are the slow clients of
issue 11: silent, headers at a byte at a time, bodies trickled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

GUARD = 20.0
"""Seconds a conversation may take before it fails as hung (a hang guard, not a measurement)."""

Step = bytes | float
"""What a client does next: send these bytes, or wait this many seconds."""

CHAT_BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'


async def converse(port: int, *steps: Step, guard: float = GUARD) -> bytes:
    """Connect, play `steps` while reading, then read until the server closes; everything the server sent.

    Reading goes on from the start, so that a response the server sends before the client has finished is
    kept even when the connection is reset afterwards. Sending stops once the server has closed.

    Raises:
        TimeoutError: the server kept the connection open longer than `guard` seconds.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    reading = asyncio.get_running_loop().create_task(read())
    try:
        async with asyncio.timeout(guard):
            for step in steps:
                if reading.done():
                    break
                if isinstance(step, bytes):
                    writer.write(step)
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                else:
                    await asyncio.sleep(step)
            await reading
    finally:
        reading.cancel()
        writer.close()
    return bytes(received)


async def eventually(check: Callable[[], bool], guard: float = GUARD) -> None:
    """Wait until `check()` holds: state owned by a server or a process, which signals nothing.

    Raises:
        TimeoutError: it did not hold within `guard` seconds.
    """
    async with asyncio.timeout(guard):
        while not check():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await asyncio.sleep(0.01)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in `raw` (each with a content-length): status, lower-cased headers, body."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def error_of(raw: bytes, status: int) -> dict[str, Any]:
    """The only response in `raw`, checked: `status`, JSON, `connection: close`, an OpenAI error; its body."""
    found = responses(raw)
    assert len(found) == 1, raw
    [(got, headers, body)] = found
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    parsed: dict[str, Any] = json.loads(body)
    assert set(parsed["error"]) == {"message", "type", "param", "code"}
    return parsed


def post(path: str, length: int, *, content_type: str = "application/json") -> bytes:
    """The head of a POST whose body of `length` bytes is to follow."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def trickle(data: bytes, every: float) -> list[Step]:
    """`data` one byte at a time, `every` seconds apart."""
    return [step for byte in data for step in (bytes([byte]), every)]


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
"""A head long enough that, at a byte a second, it never ends within any guard."""


async def hold_silent(port: int, guard: float = GUARD) -> bytes:
    """A connection that never sends a byte; what the server sent before closing it."""
    return await converse(port, guard=guard)


async def hold_slow_head(port: int, every: float = 1.0, guard: float = GUARD) -> bytes:
    """Headers at a byte every `every` seconds."""
    return await converse(port, *trickle(SLOW_HEAD, every), guard=guard)


async def hold_slow_body(port: int, every: float = 1.0, guard: float = GUARD) -> bytes:
    """A chat request whose body comes a byte every `every` seconds."""
    return await converse(port, post("/v1/chat/completions", len(CHAT_BODY)), *trickle(CHAT_BODY, every), guard=guard)
