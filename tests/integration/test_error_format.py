"""Every error a client can see is OpenAI-format JSON with the right status (Helicone's `error_format.rs` idea)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from proxy.config.sections import TimeoutSettings
from proxy.wire.sse import DONE
from routes.simulator.server import SimulatorServer
from tests.conftest import UPSTREAM_KEY, in_process, make_settings
from tests.openapi import validate
from tests.sse_client import SSEDecoder

CHAT = "/v1/chat/completions"
HELLO = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}


def assert_openai_error(response: Any, status: int, *, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    validate("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] is None or isinstance(body["error"]["code"], str)
    assert body["error"]["param"] == param
    assert response.headers["x-request-id"]
    assert "sk-" not in response.text
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "gpt-4", "messages": [', None),
        (b"[1, 2]", None),
        (b'"text"', None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 4, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4"}', "messages"),
        (b'{"model": "gpt-4", "messages": "hello"}', "messages"),
        (b'{"model": "gpt-4", "messages": []}', "messages"),
        (b'{"model": "gpt-4", "messages": [{"content": "x"}]}', "messages[0].role"),
        (b'{"model": "gpt-4", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
    ],
)
async def test_bad_bodies_are_400_naming_the_param(client: httpx.AsyncClient, body: bytes, param: str | None) -> None:
    response = await client.post(CHAT, content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400, param=param)
    assert error["type"] == "invalid_request_error"


async def test_framework_errors_are_openai_json(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/nope"), 404)  # under /v1/, an unknown path is passed through
    assert_openai_error(await client.post("/v2/completions", json=HELLO), 404)
    not_allowed = await client.get("/chat/completions")  # under /v1/, the upstream's to answer (test_not_served)
    assert_openai_error(not_allowed, 405)
    assert "POST" in not_allowed.headers["allow"]
    assert_openai_error(await client.delete("/models"), 405)
    assert_openai_error(await client.post("/healthz"), 405)
    unsupported = await client.post(CHAT, content=b"hello", headers={"content-type": "text/plain"})
    assert_openai_error(unsupported, 415)


@pytest.fixture
async def small_client(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(simulator.base_url, max_body_bytes=1000, timeout=TimeoutSettings(read=0.5))
    async with in_process(settings) as http:
        yield http


async def test_body_over_the_limit_is_413(small_client: httpx.AsyncClient) -> None:
    big = msgspec.json.encode({**HELLO, "messages": [{"role": "user", "content": "x" * 2000}]})
    assert_openai_error(await small_client.post(CHAT, content=big), 413)
    assert (await small_client.post(CHAT, json=HELLO)).status_code == 200


@pytest.mark.parametrize(
    ("fault", "status", "kept"),
    [
        ("400", 400, "Simulated error 400."),
        ("422", 422, "Simulated error 422."),
        ("401", 502, None),
        ("403", 502, None),
        ("404", 502, None),
        ("429", 429, "Rate limit reached."),
        ("500", 502, "Simulated error 500."),
        ("503", 502, "Simulated error 503."),
        ("text-500", 502, "upstream exploded"),
        ("timeout", 504, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_are_mapped(
    small_client: httpx.AsyncClient, fault: str, status: int, kept: str | None, stream: bool
) -> None:
    body = {**HELLO, "stream": stream}
    response = await small_client.post(CHAT, json=body, headers={"x-simulated-fault": fault})
    param = "messages" if status in (400, 422) else None
    error = assert_openai_error(response, status, param=param)
    if kept is not None:
        assert kept in error["message"]
    if status == 429:
        assert response.headers["retry-after"] == "1"
    assert UPSTREAM_KEY not in response.text
    assert "sk-simu" not in response.text


async def test_unreachable_upstream_is_502() -> None:
    settings = make_settings("http://127.0.0.1:9/v1")  # the discard port: nothing listens
    async with in_process(settings) as test_client:
        error = assert_openai_error(await test_client.post(CHAT, json=HELLO), 502)
        assert error["type"] == "upstream_error"
        assert_openai_error(await test_client.post(CHAT, json={**HELLO, "stream": True}), 502)


@pytest.mark.parametrize("fault", ["midstream", "disconnect"])
async def test_errors_after_the_first_byte_end_the_stream_with_an_error_event(
    client: httpx.AsyncClient, fault: str
) -> None:
    response = await client.post(CHAT, json={**HELLO, "stream": True}, headers={"x-simulated-fault": fault})
    assert response.status_code == 200
    decoder = SSEDecoder()
    payloads = decoder.feed(response.content)
    assert payloads[-1] == DONE
    assert len(payloads) > 2
    error = msgspec.json.decode(payloads[-2])
    validate("ErrorResponse", error)
    for chunk in payloads[:-2]:
        validate("CreateChatCompletionStreamResponse", msgspec.json.decode(chunk))
