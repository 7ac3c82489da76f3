"""`POST /v1/responses` through the whole app in-process, driven by the official SDK (issue 13, point 1).

The app forwards to the simulated upstream on a loopback port; answers are checked against OpenAI's schemas.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.openapi import validate


@pytest.fixture
async def sdk(client: httpx.AsyncClient) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key="sk-client",
        base_url="http://turnout.test/v1",
        http_client=client,  # type: ignore[arg-type,unused-ignore]  # openai 3 types its own httpx fork
        max_retries=0,
        _strict_response_validation=True,
    ) as sdk:
        yield sdk


def events_of(text: str) -> list[dict[str, Any]]:
    """The data of every typed event (comments and `event:` lines aside)."""
    found = []
    for block in text.split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            found.append(json.loads("\n".join(data)))
    return found


async def test_a_response_comes_back_whole_with_its_cost(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/responses", json={"model": "gpt-4o", "input": "Hello"})
    assert reply.status_code == 200, reply.text
    validate("Response", reply.json())
    assert reply.headers["x-turnout-route"] == "openai"
    assert float(reply.headers["x-turnout-cost-usd"]) > 0


async def test_the_sdk_reads_a_response_and_its_stream(sdk: openai.AsyncOpenAI) -> None:
    created = await sdk.responses.create(model="gpt-4o", input="Hello")
    assert created.output_text
    assert created.usage is not None
    assert created.usage.output_tokens > 0
    streamed = await sdk.responses.create(model="gpt-4o", input="Hello", stream=True)
    kinds = [event.type async for event in streamed]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    async with sdk.responses.stream(model="gpt-4o", input="Hello") as stream:
        final = await stream.get_final_response()
    assert final.output_text == created.output_text


async def test_the_stream_is_relayed_typed_and_numbered_with_no_done(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/responses", json={"model": "gpt-4o", "input": "Hello", "stream": True})
    assert reply.status_code == 200
    assert "[DONE]" not in reply.text
    assert "event: response.output_text.delta\n" in reply.text
    events = events_of(reply.text)
    for event in events:
        validate("ResponseStreamEvent", event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    assert ": x-turnout-cost-usd" in reply.text or "x-turnout-cost-usd" in reply.headers


async def test_an_error_after_the_first_event_is_an_error_event_numbered_after_the_last(
    client: httpx.AsyncClient,
) -> None:
    body = {"model": "gpt-4o", "input": "Hello", "stream": True}
    reply = await client.post("/v1/responses", json=body, headers={"x-simulated-fault": "midstream"})
    events = events_of(reply.text)
    assert events[-1]["type"] == "error"
    validate("ResponseStreamEvent", events[-1])
    assert events[-1]["sequence_number"] == events[-2]["sequence_number"] + 1


async def test_an_error_before_the_first_event_is_a_json_error(client: httpx.AsyncClient) -> None:
    body = {"model": "gpt-4o", "input": "Hello", "stream": True}
    reply = await client.post("/v1/responses", json=body, headers={"x-simulated-fault": "429"})
    assert reply.status_code == 429
    validate("ErrorResponse", reply.json())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "Hi"}, "model"),
        ({"model": "gpt-4o", "input": 3}, "input"),
        ({"model": "gpt-4o", "input": "Hi", "temperature": 9}, "temperature"),
        ({"model": "gpt-4o", "input": "Hi", "text": {"format": "json"}}, "text.format"),
    ],
)
async def test_a_bad_request_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    reply = await client.post("/v1/responses", json=body)
    assert reply.status_code == 400, reply.text
    validate("ErrorResponse", reply.json())
    assert reply.json()["error"]["param"] == param
