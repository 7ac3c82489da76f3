"""The simulated upstream bounds what a request makes it allocate, and says so as OpenAI would (issue 11, point 9).

Each request goes to the simulator's real aiohttp server on a loopback port, as Turnout's do.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from routes.simulator.limits import (
    MAX_BODY_BYTES,
    MAX_CHOICE_CHUNKS,
    MAX_DIMENSIONS,
    MAX_EMBEDDING_INPUTS,
    MAX_MESSAGES,
    RECORD_BYTES,
)
from routes.simulator.server import SimulatorServer
from tests.openapi import validate

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
async def upstream(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.base_url, timeout=30.0) as http:
        yield http


def error_of(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    validate("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


async def still_answers(upstream: httpx.AsyncClient) -> None:
    response = await upstream.post("/chat/completions", json=CHAT)
    assert response.status_code == 200
    validate("CreateChatCompletionResponse", response.json())


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"model":"m","messages":[{"role":"user"}],"n":1180591620717411303424}', "n"),
        (b'{"model":"m","messages":[{"role":"user"}],"x":1e400}', "x"),
        (b'{"model":"m","messages":[{"role":"user"}],"x":' + b"1" * 10_000 + b"}", "x"),
        (b'{"model":"m","messages":[{"role":"user"}],"x":' + b"[" * 979 + b"]" * 979 + b"}", None),
        (b'{"model":"m","messages":[{"role":"user"}],"x":"\xff"}', "x"),
        (b"[1, 2]", None),
        (b"{", None),
        (b'{"model":"m","messages":[{"role":"user"}],"tools":[5]}', "tools"),
        (
            b'{"model":"m","messages":[{"role":"user"}],"tools":[{"function":{"parameters":{"properties":[]}}}]}',
            "tools",
        ),
        (b'{"model":"m","messages":[{"role":"user"}],"tools":[{"function":{"name":7}}]}', "tools"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_hostile_chat_body_is_an_openai_400(upstream, raw, param, stream):
    if stream:
        raw = raw.replace(b'"messages"', b'"stream":true,"messages"', 1)
    error = error_of(await upstream.post("/chat/completions", content=raw))
    if param is not None:
        assert error["param"] == param
    await still_answers(upstream)


@pytest.mark.parametrize(
    ("headers", "fields"),
    [
        ({"x-simulated-chunks": "1000000000"}, {}),
        ({"x-simulated-chunks": "-1"}, {}),
        ({"x-simulated-chunks": "nan"}, {}),
        ({"x-simulated-chunks": str(MAX_CHOICE_CHUNKS // 128 + 1)}, {"n": 128}),
        ({"x-simulated-latency-ms": "inf"}, {}),
        ({"x-simulated-latency-ms": "1e12"}, {}),
        ({"x-simulated-chunk-interval-ms": "-5"}, {}),
        ({"x-simulated-fault": "999"}, {}),
        ({"x-simulated-fault": "text-0200"}, {}),
        ({"x-simulated-fault": "explode"}, {}),
        ({}, {"messages": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)}),
        ({}, {"n": 129}),
        ({}, {"temperature": 5}),
    ],
)
async def test_what_would_make_it_allocate_or_wait_without_bound_is_a_400(upstream, headers, fields):
    for stream in (False, True):
        response = await upstream.post("/chat/completions", json={**CHAT, **fields, "stream": stream}, headers=headers)
        error_of(response)
    await still_answers(upstream)


async def test_the_largest_answer_it_allows_is_made(upstream):
    response = await upstream.post(
        "/chat/completions", json={**CHAT, "n": 128}, headers={"x-simulated-chunks": str(MAX_CHOICE_CHUNKS // 128)}
    )
    assert response.status_code == 200
    assert len(response.json()["choices"]) == 128


async def test_n_as_an_integer_valued_float_is_answered(upstream):
    response = await upstream.post("/chat/completions", content=b'{"model":"m","messages":[{"role":"user"}],"n":2.0}')
    assert response.status_code == 200
    assert len(response.json()["choices"]) == 2


async def test_a_body_over_the_limit_is_a_413_in_openai_form(upstream):
    error = error_of(await upstream.post("/chat/completions", content=b" " * (MAX_BODY_BYTES + 1)), 413)
    assert error["code"] == "request_too_large"
    await still_answers(upstream)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"dimensions": 10**12}, "dimensions"),
        ({"dimensions": 0}, "dimensions"),
        ({"dimensions": "many"}, "dimensions"),
        ({"dimensions": MAX_DIMENSIONS + 1}, "dimensions"),
        ({"input": ["a"] * (MAX_EMBEDDING_INPUTS + 1)}, "input"),
        ({"input": ["a"] * 1024, "dimensions": MAX_DIMENSIONS}, "input"),
        ({"input": [1, "a"]}, "input"),  # token arrays are inputs, a mix is not
        ({"input": []}, "input"),
        ({"x": 10**5000}, None),
    ],
)
async def test_an_embeddings_request_is_bounded(upstream, fields, param):
    body = {"model": "text-embedding-3-small", "input": "hello", **fields}
    raw = json.dumps(body).encode() if "x" not in fields else b'{"input":"a","x":' + b"9" * 5000 + b"}"
    error = error_of(await upstream.post("/embeddings", content=raw))
    if param is not None:
        assert error["param"] == param
    ok = await upstream.post("/embeddings", json={"input": ["a b"] * 512, "dimensions": MAX_DIMENSIONS, "model": "m"})
    assert ok.status_code == 200
    assert len(ok.json()["data"]) == 512


async def test_a_large_body_is_recorded_without_its_bytes(upstream, simulator):
    content = "x" * (RECORD_BYTES + 1)
    response = await upstream.post(
        "/chat/completions",
        json={**CHAT, "messages": [{"role": "user", "content": content}]},
        headers={"x-request-id": "req-large"},
    )
    assert response.status_code == 200
    record = (await upstream.get(simulator.base_url.removesuffix("/v1") + "/_simulator/calls/req-large")).json()
    assert record["raw"] is None
    assert record["body"] is None
    assert record["raw_bytes"] > RECORD_BYTES
    assert record["models"] == ["gpt-4o-mini"]
