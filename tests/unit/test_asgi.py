from __future__ import annotations

from typing import Any

import pytest

from proxy.asgi import ClientDisconnectedError, read_body
from proxy.wire.errors import InvalidRequestError, RequestTooLargeError


def receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> Any:
        return queue.pop(0)

    return receive


def body(chunk: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": chunk, "more_body": more}


async def test_joins_the_chunks_of_a_body() -> None:
    receive = receiver(body(b"ab", True), body(b"", True), body(b"cd", False))
    assert await read_body({}, receive, 10) == b"abcd"


async def test_a_body_without_length_is_refused_once_it_passes_the_limit() -> None:
    receive = receiver(body(b"x" * 6, True), body(b"x" * 6, True), body(b"never read", False))
    with pytest.raises(RequestTooLargeError, match="limit of 10 bytes"):
        await read_body({}, receive, 10)


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async def receive() -> Any:
        raise AssertionError("must not read")

    with pytest.raises(RequestTooLargeError):
        await read_body({b"content-length": b"11"}, receive, 10)
    with pytest.raises(InvalidRequestError, match="Content-Length"):
        await read_body({b"content-length": b"ten"}, receive, 10)


async def test_a_client_gone_before_its_body_is_reported() -> None:
    with pytest.raises(ClientDisconnectedError):
        await read_body({}, receiver(body(b"ab", True), {"type": "http.disconnect"}), 10)
