"""The Responses codec: its typed view and features, its stream framing, its cache rule, its replay, its relay.

Replayed streams are checked against OpenAI's own event schemas, and their events re-assembled as the SDK does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any, cast

import msgspec
import pytest

from proxy.endpoints.chat import CHAT
from proxy.endpoints.responses import ANSWER_FIELDS, IGNORED_FIELDS, RESPONSES, ResponsesRequest
from proxy.streaming import open_relay
from proxy.wire.errors import InvalidRequestError, NotFoundError, UpstreamError, upstream_status_error
from proxy.wire.schemas import Usage
from routes import Call
from routes.simulator.responses import SimulatedResponse
from tests.openapi import schema, validate

TOOL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}


def decoded(**body: Any) -> Any:
    return RESPONSES.decode(json.dumps({"model": "gpt-4o", **body}).encode())


def events_of(stream: bytes) -> list[dict[str, Any]]:
    found = []
    for block in stream.decode().split("\n\n"):
        lines = block.split("\n")
        data = [line[6:] for line in lines if line.startswith("data: ")]
        if data:
            event = json.loads(data[0])
            assert f"event: {event['type']}" in lines
            found.append(event)
    return found


def test_every_field_of_openais_request_is_classified_for_the_cache() -> None:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                walk(schema(node["$ref"].rsplit("/", 1)[-1]))
            for part in node.get("allOf", []) + node.get("anyOf", []):
                walk(part)
            found.update(node.get("properties", {}))

    walk(schema("CreateResponse"))
    assert not found - ANSWER_FIELDS - IGNORED_FIELDS
    assert not set(ResponsesRequest.__struct_fields__) - ANSWER_FIELDS - IGNORED_FIELDS
    assert not ANSWER_FIELDS & IGNORED_FIELDS


def test_the_features_read_instructions_input_tools_format_reasoning_and_metadata() -> None:
    body = decoded(
        instructions="Be brief.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "First"}]},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
            {"type": "message", "role": "user", "content": "Second"},
        ],
        tools=[TOOL],
        text={"format": {"type": "json_schema", "name": "x", "schema": {}}},
        reasoning={"effort": "high"},
        metadata={"team": "a"},
        temperature=0.5,
    )
    features = RESPONSES.features(Call(endpoint=RESPONSES, body=body, headers={"X-Team": "b"}, caller="c"))
    assert features.last_user_text == "Second" == RESPONSES.question(body)
    assert features.conversation_text == "Be brief.\nFirst\nSecond"
    assert (features.has_tools, features.response_format, features.reasoning_effort) == (True, "json_schema", "high")
    assert (features.metadata, features.headers["x-team"], features.temperature) == ({"team": "a"}, "b", 0.5)
    assert features.prompt_tokens > 3
    assert RESPONSES.question(decoded(input="Just this")) == "Just this"
    chat = CHAT.decode(b'{"model": "o3", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"}')
    assert CHAT.features(Call(endpoint=CHAT, body=chat, headers={})).reasoning_effort == "low"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 3}, "input"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": "x", "tools": {}}, "tools"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "reasoning": "high"}, "reasoning"),
        ({"input": "x", "store": "yes"}, "store"),
    ],
)
def test_a_bad_request_is_a_400_naming_its_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decoded(**body)
    assert caught.value.param == param


def test_what_turnout_does_not_read_passes_untouched_and_only_the_model_is_rewritten() -> None:
    body = decoded(input="x", store=False, background=True, include=["reasoning.encrypted_content"], extra={"a": 1})
    assert RESPONSES.upstream_body(body, model=None, stream=True) is body.raw
    rewritten = json.loads(RESPONSES.upstream_body(body, model="gpt-4o-mini", stream=True))
    assert rewritten == {**json.loads(body.raw), "model": "gpt-4o-mini"}


def test_only_a_temperature_0_request_in_the_foreground_is_deterministic() -> None:
    assert RESPONSES.deterministic(decoded(input="x", temperature=0))
    assert not RESPONSES.deterministic(decoded(input="x"))
    assert not RESPONSES.deterministic(decoded(input="x", temperature=0, background=True))


def test_the_semantic_context_is_the_request_before_its_last_user_input() -> None:
    items = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    context = RESPONSES.cache_context(decoded(input=items))
    assert context is not None
    assert json.loads(bytes(context["input"])) == items[:2]
    assert RESPONSES.cache_context(decoded(input=items[:2])) is None
    string = RESPONSES.cache_context(decoded(input="c"))
    assert string is not None
    assert bytes(string["input"]) == b'""'


def simulated(**body: Any) -> SimulatedResponse:
    return SimulatedResponse({"model": "gpt-4o", "input": "Hi", **body}, 5)


@pytest.mark.parametrize("tools", [None, [TOOL]])
def test_a_whole_response_replays_as_the_events_of_a_live_stream(tools: list[Any] | None) -> None:
    answer = simulated(tools=tools)
    whole = msgspec.json.encode(answer.finished())
    replayed = RESPONSES.replay(RESPONSES.stored(whole), stream=True, wants_usage=False)
    events = events_of(replayed.body)
    for event in events:
        validate("ResponseStreamEvent", event)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:3]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]
    assert events[-1]["response"] == json.loads(whole)
    if tools is None:
        text = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
        assert text == "".join(answer.words)
    used = answer.usage()
    assert replayed.usage is not None
    totals = replayed.usage.prompt_tokens, replayed.usage.completion_tokens, replayed.usage.total_tokens
    assert totals == (used["input_tokens"], 5, used["total_tokens"])
    back = RESPONSES.replay(RESPONSES.stored_stream(replayed.body) or b"", stream=False, wants_usage=True)
    assert json.loads(back.body) == json.loads(whole)


def test_a_response_that_is_not_finished_is_never_stored() -> None:
    queued = msgspec.json.encode(simulated().response(status="queued"))
    assert not RESPONSES.replayable(RESPONSES.stored(queued))
    events = b"".join(simulated().events())
    assert RESPONSES.stored_stream(events.rsplit(b"event: response.completed", 1)[0]) is None


def test_the_stream_ends_at_its_end_event_even_with_comments_after_it() -> None:
    events = b"".join(simulated().events())
    assert RESPONSES.ends(events)
    assert RESPONSES.ends(events + b": x-turnout-cost-usd: 0.1\n\n")
    assert not RESPONSES.ends(events.rsplit(b"event: response.completed", 1)[0])
    assert RESPONSES.ends(RESPONSES.error_event(UpstreamError("x")))
    incomplete = b'event: response.incomplete\ndata: {"type":"response.incomplete","sequence_number":3}\n\n'
    assert RESPONSES.cut(incomplete + b"data: after\n\n").ended


def test_an_upstream_error_event_is_read_as_an_openai_error() -> None:
    error = b'event: error\ndata: {"type":"error","code":"server_error","message":"boom","param":null}\n\n'
    cut = RESPONSES.cut(simulated().events()[0] + error)
    assert cut.error is not None
    assert json.loads(cut.error)["error"]["message"] == "boom"


async def test_the_relay_passes_typed_events_with_no_done_and_numbers_its_error_after_the_last() -> None:
    events = simulated().events()

    async def source() -> AsyncGenerator[bytes, None]:
        yield b"".join(events[:3])
        raise UpstreamError("The upstream broke off its response.")

    seen: list[Usage] = []
    relay = await open_relay(source(), RESPONSES, wants_usage=True, on_usage=lambda u, m: seen.append(u))
    out = b"".join([chunk async for chunk in relay])
    parsed = events_of(out)
    assert b"[DONE]" not in out
    assert parsed[-1]["type"] == "error"
    assert parsed[-1]["sequence_number"] == 3
    validate("ResponseStreamEvent", parsed[-1])

    async def whole() -> AsyncGenerator[bytes, None]:
        yield b"".join(events)

    comments = b": x-turnout-cost-usd: 0.5\n\n"
    relay = await open_relay(
        whole(), RESPONSES, wants_usage=True, on_usage=lambda u, m: seen.append(u), on_end=lambda e, sent: comments
    )
    chunks = [chunk async for chunk in relay]
    assert chunks == [b"".join(events) + comments]
    assert seen[-1].completion_tokens == 5


# --- what an upstream's error means for a request ----------------------------------------------------------


def upstream_404() -> UpstreamError:
    return cast("UpstreamError", upstream_status_error(404, b'{"error": {"message": "not here"}}'))


def test_an_upstream_404_for_a_previous_response_is_the_caller_s_not_found() -> None:
    error = RESPONSES.upstream_error(decoded(input="Hi", previous_response_id="resp_gone"), upstream_404())

    assert isinstance(error, NotFoundError)
    assert (error.status, error.param, error.route_failure) == (404, "previous_response_id", False)
    assert error.message == "Previous response with id 'resp_gone' not found."


@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_another_upstream_error_for_a_previous_response_stays_as_it_is(status: int) -> None:
    error = upstream_status_error(status, b"{}")
    assert RESPONSES.upstream_error(decoded(input="Hi", previous_response_id="resp_1"), error) is error


def test_an_upstream_404_for_a_request_naming_no_stored_response_stays_the_route_s() -> None:
    error = upstream_404()
    assert RESPONSES.upstream_error(decoded(input="Hi"), error) is error
    assert error.route_failure
