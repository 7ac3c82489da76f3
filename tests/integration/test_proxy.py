"""The whole app in-process, forwarding to the simulated upstream on loopback: what reaches it, what comes back."""

from __future__ import annotations

import httpx
import msgspec

from proxy.wire.sse import DONE
from routes.simulator.server import SimulatorServer
from tests.conftest import UPSTREAM_KEY, upstream_call
from tests.openapi import validate
from tests.sse_client import SSEDecoder

CHAT = "/v1/chat/completions"
HELLO = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}


def sse_payloads(body: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    payloads = decoder.feed(body)
    assert not decoder.pending
    return payloads


async def test_body_reaches_upstream_byte_for_byte(client: httpx.AsyncClient, simulator: SimulatorServer) -> None:
    raw = (
        b'{"model": "gpt-4", "messages": [{"role": "user", "content": "Caf\\u00e9 \xe2\x98\x95", "name": null}],'
        b' "seed": 7, "n": 2, "logprobs": true, "top_logprobs": 2, "temperature": 0.70,'
        b' "response_format": {"type": "json_object"}, "x_vendor": {"a": null, "b": [1, 2.50]},'
        b' "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}'
    )
    response = await client.post(
        CHAT, content=raw, headers={"content-type": "application/json", "x-request-id": "req-bytes-1"}
    )
    assert response.status_code == 200
    call = await upstream_call(simulator, "req-bytes-1")
    assert call["raw"].encode() == raw
    assert len(response.json()["choices"]) == 2


async def test_credentials_and_hop_by_hop_headers_stay_behind(
    client: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    headers = {
        "authorization": "Bearer sk-client-key-should-not-travel",
        "x-request-id": "req-headers-1",
        "connection": "keep-alive, x-hop",
        "x-hop": "1",
        "te": "trailers",
        "proxy-authorization": "Basic abc",
        "openai-organization": "org-client",
        "x-custom": "kept",
    }
    response = await client.post(CHAT, json=HELLO, headers=headers)
    assert response.status_code == 200
    received = {k.lower(): v for k, v in (await upstream_call(simulator, "req-headers-1"))["headers"].items()}
    assert received["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received["x-custom"] == "kept"
    assert received["x-request-id"] == "req-headers-1"
    for name in ("x-hop", "te", "proxy-authorization", "openai-organization"):
        assert name not in received
    assert "sk-client-key" not in str(received)


async def test_request_id_created_when_absent_and_sent_upstream(
    client: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    first = await client.post(CHAT, json=HELLO)
    second = await client.post(CHAT, json=HELLO)
    request_id = first.headers["x-request-id"]
    assert request_id.startswith("req_")
    assert request_id != second.headers["x-request-id"]
    received = {k.lower(): v for k, v in (await upstream_call(simulator, request_id))["headers"].items()}
    assert received["x-request-id"] == request_id


async def test_completion_is_the_upstreams_and_valid(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=HELLO)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validate("CreateChatCompletionResponse", body)
    assert body["model"] == "gpt-4"
    assert body["usage"]["completion_tokens"] == 12


async def test_model_passes_through_unchanged_without_policy(
    client: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    model = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
    response = await client.post(CHAT, json={**HELLO, "model": model}, headers={"x-request-id": "req-model"})
    assert response.json()["model"] == model
    assert (await upstream_call(simulator, "req-model"))["body"]["model"] == model


async def test_unprefixed_path_works(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=HELLO)
    assert response.status_code == 200


async def test_stream_asks_upstream_for_usage_and_strips_it(
    client: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    response = await client.post(CHAT, json={**HELLO, "stream": True}, headers={"x-request-id": "req-strip"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.content)
    assert payloads[-1] == DONE
    chunks = [msgspec.json.decode(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["choices"], "the usage-only chunk must be stripped"
        assert chunk.get("usage") is None
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).startswith("This is a simulated")
    sent = (await upstream_call(simulator, "req-strip"))["body"]
    assert sent["stream_options"] == {"include_usage": True}


async def test_stream_keeps_usage_when_asked(client: httpx.AsyncClient, simulator: SimulatorServer) -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post(CHAT, json=body, headers={"x-request-id": "req-usage"})
    payloads = sse_payloads(response.content)
    last = msgspec.json.decode(payloads[-2])
    validate("CreateChatCompletionStreamResponse", last)
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 12
    assert (await upstream_call(simulator, "req-usage"))["raw"].encode() == msgspec.json.encode(body)


async def test_stream_tool_calls_are_relayed(client: httpx.AsyncClient) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    response = await client.post(CHAT, json={**HELLO, "stream": True, "tools": [tool]})
    chunks = [msgspec.json.decode(p) for p in sse_payloads(response.content)[:-1]]
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0][0]["function"]["name"] == "lookup"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_models_are_the_upstreams(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    validate("ListModelsResponse", models.json())
    one = await client.get("/v1/models/ft:gpt-3.5-turbo-0613:acme::8Xyz")
    validate("Model", one.json())
    assert one.json()["id"] == "ft:gpt-3.5-turbo-0613:acme::8Xyz"
    missing = await client.get("/v1/models/no-such-model")
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "model"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "routes": ["openai"]}
