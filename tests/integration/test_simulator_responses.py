"""The simulated Responses API, driven by the official SDK (strict validation) and checked against OpenAI's schemas.

Each request goes to the simulator's real aiohttp server on a loopback port (issue 13, point 7).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pydantic
import pytest

from routes.simulator.server import SimulatorServer
from tests.openapi import validate


@pytest.fixture
async def sdk(simulator: SimulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=simulator.base_url, max_retries=0, _strict_response_validation=True
    ) as client:
        yield client


@pytest.fixture
async def http(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.base_url, timeout=30.0) as client:
        yield client


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def test_a_response_is_a_response_object_with_its_usage(http: httpx.AsyncClient) -> None:
    reply = await http.post("/responses", json={"model": "gpt-4o", "input": "Hello", "instructions": "Be brief"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    validate("Response", body)
    assert body["id"].startswith("resp_")
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["output"][0]["content"][0]["type"] == "output_text"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


async def test_the_stream_is_typed_events_numbered_in_order_ending_in_completed(http: httpx.AsyncClient) -> None:
    reply = await http.post("/responses", json={"model": "gpt-4o", "input": "Hello", "stream": True})
    events = events_of(reply.text)
    assert "[DONE]" not in reply.text
    for name, data in events:
        assert name == data["type"]
        validate("ResponseStreamEvent", data)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    kinds = [name for name, _ in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(data["delta"] for name, data in events if name == "response.output_text.delta")
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == text
    assert events[-1][1]["response"]["usage"]["output_tokens"] > 0


async def test_the_sdk_reads_both_forms_and_the_stored_response(sdk: openai.AsyncOpenAI) -> None:
    created = await sdk.responses.create(model="gpt-4o", input="Hello")
    assert created.output_text
    assert (await sdk.responses.retrieve(created.id)).id == created.id
    items = await sdk.responses.input_items.list(created.id)
    assert items.data[0].type == "message"
    follow = await sdk.responses.create(model="gpt-4o", input="More", previous_response_id=created.id)
    assert follow.previous_response_id == created.id
    async with sdk.responses.stream(model="gpt-4o", input="Hello") as stream:
        final = await stream.get_final_response()
    assert final.output_text
    await sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(created.id)


async def test_an_unknown_previous_response_is_a_404(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.responses.create(model="gpt-4o", input="Hi", previous_response_id="resp_nope")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_a_response_not_stored_is_not_found(sdk: openai.AsyncOpenAI) -> None:
    created = await sdk.responses.create(model="gpt-4o", input="Hello", store=False)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(created.id)


async def test_function_tools_are_called(http: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    body = (await http.post("/responses", json={"model": "gpt-4o", "input": "Rain?", "tools": [tool]})).json()
    validate("Response", body)
    call = body["output"][0]
    assert call["type"] == "function_call"
    assert call["name"] == "weather"
    assert json.loads(call["arguments"]) == {"city": "simulated"}
    streamed = await http.post(
        "/responses", json={"model": "gpt-4o", "input": "Rain?", "tools": [tool], "stream": True}
    )
    events = events_of(streamed.text)
    for _, data in events:
        validate("ResponseStreamEvent", data)
    assert any(name == "response.function_call_arguments.done" for name, _ in events)


async def test_a_background_response_can_be_cancelled(sdk: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    created = await sdk.responses.create(
        model="gpt-4o", input="Hi", background=True, extra_headers={"x-simulated-latency-ms": "60000"}
    )
    assert created.status == "queued"
    cancelled = await sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    plain = await sdk.responses.create(model="gpt-4o", input="Hi")
    refused = await http.post(f"/responses/{plain.id}/cancel")
    assert refused.status_code == 400


async def test_input_items_page_in_either_order(http: httpx.AsyncClient) -> None:
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(3)]
    created = (await http.post("/responses", json={"model": "gpt-4o", "input": inputs})).json()
    page = (await http.get(f"/responses/{created['id']}/input_items", params={"order": "asc", "limit": 2})).json()
    validate("ResponseItemList", page)
    assert [item["content"][0]["text"] for item in page["data"]] == ["m0", "m1"]
    assert page["has_more"] is True
    rest = await http.get(f"/responses/{created['id']}/input_items", params={"order": "asc", "after": page["last_id"]})
    assert [item["content"][0]["text"] for item in rest.json()["data"]] == ["m2"]


async def test_a_midstream_fault_is_an_error_event(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/responses",
        json={"model": "gpt-4o", "input": "Hi", "stream": True},
        headers={"x-simulated-fault": "midstream"},
    )
    events = events_of(reply.text)
    assert events[-1][0] == "error"
    validate("ResponseStreamEvent", events[-1][1])


async def test_a_bad_input_is_a_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/responses", json={"model": "gpt-4o", "input": 3})
    assert reply.status_code == 400
    validate("ErrorResponse", reply.json())


class Order(pydantic.BaseModel):
    item: str
    quantity: int
    express: bool


async def test_text_format_json_schema_answers_json_valid_against_it(sdk: openai.AsyncOpenAI) -> None:
    parsed = await sdk.responses.parse(model="gpt-4o", input="Two pizzas, fast.", text_format=Order)
    assert isinstance(parsed.output_parsed, Order)
    async with sdk.responses.stream(model="gpt-4o", input="Two pizzas, fast.", text_format=Order) as stream:
        final = await stream.get_final_response()
    assert isinstance(final.output_parsed, Order)


async def test_text_format_json_object_answers_a_json_object(http: httpx.AsyncClient) -> None:
    body = {"model": "gpt-4o", "input": "Answer in JSON.", "text": {"format": {"type": "json_object"}}}
    reply = await http.post("/responses", json=body)
    validate("Response", reply.json())
    assert isinstance(json.loads(reply.json()["output"][0]["content"][0]["text"]), dict)
