"""What a client sends the simulator's new endpoints never makes it fail with a 500 (issue 13, point 7).

Malformed multipart bodies, wrong types in batch, job and moderation bodies, schemas that cannot be
satisfied: each is an OpenAI-format 4xx (or, for a schema, a bounded best effort), and the simulator
answers the next request.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from routes.simulator.server import SimulatorServer
from tests.openapi import validate

MULTIPART = {"content-type": "multipart/form-data; boundary=x"}
CHAT: Any = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture
async def upstream(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.base_url, timeout=30.0) as http:
        yield http


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/files", b"garbage", {"content-type": "multipart/form-data"}),
        ("/files", b"garbage", MULTIPART),
        ("/files", b'--x\r\nContent-Disposition: form-data; name="file"; filename="a\r\n\r\nabc', MULTIPART),
        (
            "/files",
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc\r\n--x--\r\n',
            MULTIPART,
        ),
        ("/files", b"--x\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n--y\r\n\r\n--y--\r\n--x--\r\n", MULTIPART),
        ("/files", b'{"purpose": "batch"}', {"content-type": "application/json"}),
        ("/batches", b'{"endpoint": [1], "completion_window": "24h", "input_file_id": "x"}', {}),
        ("/batches", b'{"endpoint": "/v1/chat/completions", "completion_window": "24h", "input_file_id": 5}', {}),
        ("/batches", b"[1]", {}),
        ("/fine_tuning/jobs", b'{"model": "m", "training_file": "f", "method": 5}', {}),
        ("/fine_tuning/jobs", b'{"model": "m", "training_file": 5}', {}),
        ("/fine_tuning/jobs", b'{"model": 5}', {}),
        ("/moderations", b'{"input": [{"type": "text"}]}', {}),
        ("/moderations", b'{"input": {"a": 1}}', {}),
        ("/moderations", b"{", {}),
    ],
)
async def test_a_hostile_body_is_an_openai_4xx(upstream, path, body, headers):
    response = await upstream.post(path, content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    validate("ErrorResponse", response.json())
    assert (await upstream.post("/moderations", json={"input": "still here"})).status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        {
            "tool_choice": {"type": "function", "function": "x"},
            "tools": [{"type": "function", "function": {"name": "a"}}],
        },
        {
            "tool_choice": {"type": "allowed_tools", "allowed_tools": 5},
            "tools": [{"type": "function", "function": {"name": "a"}}],
        },
        {"response_format": {"type": "json_schema", "json_schema": 5}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
                },
            }
        },
        {"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "{" * 10_000}]},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "a",
                        "parameters": {"properties": {"x": {"type": "string", "pattern": "(a*)*b"}}},
                    },
                }
            ]
        },
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_hostile_chat_option_gets_an_answer(upstream, extra, stream):
    response = await upstream.post("/chat/completions", json={**CHAT, **extra, "stream": stream})
    assert response.status_code == 200, response.text
    if not stream:
        body = response.json()
        validate("CreateChatCompletionResponse", body)
        json.dumps(body)
