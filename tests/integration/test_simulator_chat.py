"""The simulated upstream's chat, driven by the official SDK: structured output, tool choice, logprobs (issue 13, 7).

Each test talks to the simulator's real aiohttp server on a loopback port, as an application in
simulator mode does, with the SDK's strict response validation on; bodies are checked against OpenAI's
own schemas too.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import openai
import pydantic

from tests.openapi import validate

MESSAGES: Any = [{"role": "user", "content": "What is the weather in Paris, and the time?"}]


def tool(name: str, parameters: dict[str, Any] | None = None) -> Any:
    schema = parameters or {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 3},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    }
    return {"type": "function", "function": {"name": name, "parameters": schema}}


WEATHER, TIME = tool("get_weather"), tool("get_time")


async def create(sdk: openai.AsyncOpenAI, **kwargs: Any) -> dict[str, Any]:
    """A completion's raw body, checked against OpenAI's schema."""
    raw = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, **kwargs)
    body: dict[str, Any] = raw.http_response.json()
    validate("CreateChatCompletionResponse", body)
    return body


async def chunks(sdk: openai.AsyncOpenAI, **kwargs: Any) -> list[dict[str, Any]]:
    """A stream's chunks, each checked against OpenAI's schema."""
    raw = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True, **kwargs)
    text = (await raw.http_response.aread()).decode()
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    decoded = [json.loads(event) for event in events[:-1]]
    for chunk in decoded:
        validate("CreateChatCompletionStreamResponse", chunk)
    return decoded


class Address(pydantic.BaseModel):
    street: str
    city: str


class Forecast(pydantic.BaseModel):
    city: str
    kind: Literal["sunny", "rainy"]
    degrees: float = pydantic.Field(ge=-50, le=60)
    days: list[int] = pydantic.Field(min_length=2)
    address: Address | None
    notes: list[Address]


async def test_parse_with_a_pydantic_model_gives_the_model(sdk):
    completion = await sdk.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Forecast)

    forecast = completion.choices[0].message.parsed
    assert isinstance(forecast, Forecast)
    assert len(forecast.days) >= 2


async def test_a_streamed_structured_answer_is_the_schemas_json(sdk):
    async with sdk.chat.completions.stream(model="gpt-4o", messages=MESSAGES, response_format=Forecast) as stream:
        final = await stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Forecast)


async def test_json_object_is_a_json_object(sdk):
    body = await create(sdk, response_format={"type": "json_object"})
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)
    streamed = await chunks(sdk, response_format={"type": "json_object"})
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed if c["choices"])
    assert isinstance(json.loads(text), dict)


async def test_json_object_follows_the_schema_the_prompt_gives(sdk):
    prompt = f"Answer with a JSON object of this schema:\n```\n{json.dumps(Forecast.model_json_schema())}\n```"
    messages: Any = [{"role": "system", "content": prompt}, *MESSAGES]
    completion = await sdk.chat.completions.create(
        model="gpt-4o", messages=messages, response_format={"type": "json_object"}
    )
    Forecast.model_validate_json(completion.choices[0].message.content or "")


def calls_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = body["choices"][0]["message"].get("tool_calls") or []
    return calls


async def test_tool_choice_none_makes_no_call(sdk):
    body = await create(sdk, tools=[WEATHER], tool_choice="none")
    assert calls_of(body) == []
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_tool_choice_required_calls_even_after_a_tool_result(sdk):
    messages: Any = [
        *MESSAGES,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    auto = await sdk.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER])
    assert auto.choices[0].message.tool_calls is None
    required = await sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER], tool_choice="required"
    )
    assert required.choices[0].finish_reason == "tool_calls"
    assert required.choices[0].message.tool_calls


async def test_a_named_tool_choice_calls_that_function(sdk):
    choice: Any = {"type": "function", "function": {"name": "get_time"}}
    body = await create(sdk, tools=[WEATHER, TIME], tool_choice=choice)
    assert [call["function"]["name"] for call in calls_of(body)] == ["get_time"]


async def test_arguments_are_valid_against_the_functions_parameters(sdk):
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    body = await create(sdk, tools=[WEATHER])
    arguments = json.loads(calls_of(body)[0]["function"]["arguments"])
    Draft202012Validator(WEATHER["function"]["parameters"]).validate(arguments)
    assert arguments["days"] >= 3


async def test_parallel_calls_one_per_tool_with_unique_ids(sdk):
    body = await create(sdk, tools=[WEATHER, TIME])
    calls = calls_of(body)
    assert [call["function"]["name"] for call in calls] == ["get_weather", "get_time"]
    again = calls_of(await create(sdk, tools=[WEATHER, TIME]))
    ids = [call["id"] for call in calls + again]
    assert len(set(ids)) == 4
    assert all(id_.startswith("call_") for id_ in ids)
    single = calls_of(await create(sdk, tools=[WEATHER, TIME], parallel_tool_calls=False))
    assert [call["function"]["name"] for call in single] == ["get_weather"]


async def test_streamed_parallel_calls_carry_their_index_and_id(sdk):
    streamed = await chunks(sdk, tools=[WEATHER, TIME])
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for chunk in streamed:
        for delta in chunk["choices"][0]["delta"].get("tool_calls") or []:
            index = delta["index"]
            if "id" in delta:
                ids[index] = delta["id"]
                names[index] = delta["function"]["name"]
            arguments[index] = arguments.get(index, "") + delta["function"]["arguments"]
    assert names == {0: "get_weather", 1: "get_time"}
    assert len(set(ids.values())) == 2
    assert all(json.loads(text)["city"] for text in arguments.values())
    assert streamed[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_plain_answer_twice_has_two_ids_and_repeated_tool_answers_never_share_a_call_id(sdk):
    first, second = await create(sdk), await create(sdk)
    assert first["id"] != second["id"]
    ids = {calls_of(await create(sdk, tools=[WEATHER]))[0]["id"] for _ in range(5)}
    assert len(ids) == 5


async def test_logprobs_when_asked_per_content_token(sdk):
    body = await create(sdk, logprobs=True, top_logprobs=3)
    choice = body["choices"][0]
    tokens = choice["logprobs"]["content"]
    assert "".join(token["token"] for token in tokens) == choice["message"]["content"]
    assert all(len(token["top_logprobs"]) == 3 and token["logprob"] <= 0 for token in tokens)
    assert (await create(sdk))["choices"][0]["logprobs"] is None

    streamed = await chunks(sdk, logprobs=True, top_logprobs=2)
    with_tokens = [c["choices"][0] for c in streamed if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert all(len(choice["logprobs"]["content"]) == 1 for choice in with_tokens)
    assert [choice["logprobs"]["content"][0]["token"] for choice in with_tokens] == [
        choice["delta"]["content"] for choice in with_tokens
    ]
