"""Chat completions and models through the real server, as the official SDK sees them."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from tests.e2e.conftest import CLIENT_KEY, SERVER_KEY, RunningProcess, SimulatorCalls, lower_keys, new_request_id
from tests.openapi import validate

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
WEATHER_TOOL: Any = {  # a plain dict, as callers write it
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HOP_BY_HOP = ("keep-alive", "te", "proxy-authorization", "x-hop-by-name")


def data_lines(lines: Any) -> list[str]:
    """The payloads of the `data:` lines of an SSE body, in order."""
    return [line.removeprefix("data:").strip() for line in lines if line.startswith("data:")]


# --- non-streaming -------------------------------------------------------------------------------------------


def test_completion_returns_content(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


def test_completion_body_matches_openai_schema_and_has_a_request_id(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)

    assert raw.http_response.status_code == 200
    validate("CreateChatCompletionResponse", raw.http_response.json())
    assert raw.headers.get("x-request-id")
    assert raw.parse().choices[0].message.content


def test_client_request_id_is_echoed_and_forwarded(client: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-request-id": request_id}
    )

    assert raw.headers["x-request-id"] == request_id
    received = lower_keys(simulator_call(request_id)["headers"])
    assert received["x-request-id"] == request_id


def test_upstream_receives_the_body_exactly_as_sent(client: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()

    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,
        seed=7,
        n=2,
        logprobs=False,
        temperature=0.25,
        response_format={"type": "json_object"},
        tools=[WEATHER_TOOL],
        extra_body={"x_custom": {"a": None}, "metadata": {"team": "e2e"}},
        extra_headers={"x-request-id": request_id},
    )

    assert raw.http_response.status_code == 200
    sent = raw.http_response.request.content
    record = simulator_call(request_id)
    assert record["raw"] == sent.decode()
    assert record["body"] == {
        "model": MODEL,
        "messages": MESSAGES,
        "seed": 7,
        "n": 2,
        "logprobs": False,
        "temperature": 0.25,
        "response_format": {"type": "json_object"},
        "tools": [WEATHER_TOOL],
        "x_custom": {"a": None},
        "metadata": {"team": "e2e"},
    }
    assert len(raw.parse().choices) == 2


def test_upstream_gets_turnouts_key_only_and_no_hop_by_hop_headers(
    client: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    request_id = new_request_id()

    client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        extra_headers={
            "x-request-id": request_id,
            "connection": "keep-alive, x-hop-by-name",
            "x-hop-by-name": "dropped because the connection header names it",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "proxy-authorization": "Basic cHJveHk6c2VjcmV0",
            "api-key": CLIENT_KEY,
            "x-api-key": CLIENT_KEY,
            "x-end-to-end": "forwarded",
        },
    )

    record = simulator_call(request_id)
    received = lower_keys(record["headers"])
    assert received["authorization"] == f"Bearer {SERVER_KEY}"
    assert CLIENT_KEY not in json.dumps(record)
    assert received["x-end-to-end"] == "forwarded"
    for name in HOP_BY_HOP:
        assert name not in received, f"the upstream received the hop-by-hop header {name}"
    assert "x-hop-by-name" not in received.get("connection", "")


# --- streaming -----------------------------------------------------------------------------------------------


def test_stream_yields_the_content(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)

    with stream:
        chunks = list(stream)

    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content.startswith("This is a simulated answer")
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_stream_yields_the_content(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)

    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]

    assert "".join(parts).startswith("This is a simulated answer")


@pytest.mark.parametrize("include_usage", [True, False])
def test_raw_stream_chunks_match_openai_schema(client: openai.OpenAI, include_usage: bool) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": include_usage}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = data_lines(response.iter_lines())

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert len(chunks) > 2
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] > 0
        assert all(chunk.get("usage") is None for chunk in chunks[:-1])
    else:
        assert all(chunk.get("usage") is None for chunk in chunks)


def test_stream_without_usage_asks_the_upstream_for_it(client: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()

    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, extra_headers={"x-request-id": request_id}
    )
    with stream:
        chunks = list(stream)

    assert chunks
    assert all(chunk.usage is None for chunk in chunks)
    record = simulator_call(request_id)
    assert record["body"]["stream_options"] == {"include_usage": True}
    assert record["outcome"] == "completed"


def test_sdk_stream_with_usage_ends_with_the_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    with stream:
        chunks = list(stream)

    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_chunks_are_relayed_as_they_arrive(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-simulated-chunks": "5", "x-simulated-chunk-interval-ms": "200"},
    )
    arrivals = []
    with stream:
        for _ in stream:
            arrivals.append(time.monotonic())

    # Seven chunks 200 ms apart upstream: buffered, they would all arrive at once.
    assert len(arrivals) == 7
    assert arrivals[-1] - arrivals[0] >= 0.5


def test_client_disconnect_cancels_the_upstream(client: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_headers={
            "x-request-id": request_id,
            "x-simulated-chunks": "100",
            "x-simulated-chunk-interval-ms": "100",
        },
    )
    next(stream)
    next(stream)
    stream.close()
    closed_at = time.time()

    record = simulator_call.wait_for(request_id, lambda call: call["outcome"] == "cancelled", timeout=5.0)

    assert record is not None
    assert record["outcome"] == "cancelled", record
    assert record["cancelled_at"] - closed_at < 1.0


def test_a_client_that_times_out_takes_its_upstream_call_with_it(
    client: openai.OpenAI, turnout: RunningProcess, simulator_call: SimulatorCalls
) -> None:
    """Not streamed: the SDK gives up after its timeout, and Turnout cancels the upstream call within a second."""
    request_id = new_request_id()
    impatient = client.with_options(timeout=0.5, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            extra_headers={"x-request-id": request_id, "x-simulated-latency-ms": "20000"},
        )
    gave_up_at = time.time()

    record = simulator_call.wait_for(request_id, lambda call: call["outcome"] == "cancelled", timeout=5.0)

    assert record is not None
    assert record["outcome"] == "cancelled", record
    assert record["cancelled_at"] - gave_up_at < 1.0
    line = wait_for_log_line(turnout, request_id)
    assert (line["status"], line.get("cost_usd")) == (499, None)  # nothing was reported, nothing is charged


def wait_for_log_line(turnout: RunningProcess, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The access log line of `request_id`, once the process has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for text in turnout.stderr().splitlines():
            if request_id in text and text.startswith("{"):
                line: dict[str, Any] = json.loads(text)
                if line.get("request_id") == request_id:
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}:\n{turnout.stderr()[-2000:]}")


# --- tool calls ----------------------------------------------------------------------------------------------


def test_tool_call_is_parsed(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL])

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "simulated"}


def test_streamed_tool_call_accumulates(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], stream=True)

    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish_reason = None
    with stream:
        for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish_reason = choice.finish_reason or finish_reason
            for delta in choice.delta.tool_calls or []:
                if delta.function is None:
                    continue
                names[delta.index] = names.get(delta.index, "") + (delta.function.name or "")
                arguments[delta.index] = arguments.get(delta.index, "") + (delta.function.arguments or "")

    assert finish_reason == "tool_calls"
    assert names == {0: "get_weather"}
    assert json.loads(arguments[0]) == {"city": "simulated"}


# --- models --------------------------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    raw = client.models.with_raw_response.list()

    assert "gpt-4" in ids
    assert "ft:gpt-3.5-turbo-0613:acme::8Xyz" in ids
    validate("ListModelsResponse", raw.http_response.json())


def test_model_retrieve_fine_tuned_id(client: openai.OpenAI) -> None:
    model_id = "ft:gpt-3.5-turbo-0613:acme::8Xyz"

    model = client.models.retrieve(model_id)
    raw = client.models.with_raw_response.retrieve(model_id)

    assert model.id == model_id
    validate("Model", raw.http_response.json())


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-does-not-exist")

    assert caught.value.status_code == 404
    validate("ErrorResponse", caught.value.response.json())
