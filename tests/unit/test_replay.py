"""Cached answers replayed in the other form: every body and chunk valid against OpenAI's schemas."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proxy.endpoints.chat_replay import COMPLETION, STREAM, entry, replay, replayable
from proxy.wire.answers import UnreadableAnswerError
from proxy.wire.sse import DONE
from routes.simulator.answers import Answer, render_completion, render_events
from tests.openapi import validate
from tests.sse_client import SSEDecoder

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
    },
}


def answer(**body: Any) -> Answer:
    return Answer(
        body={"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], **body},
        latency=0,
        interval=0,
        chunks=6,
        fault="",
    )


def assemble(events: bytes) -> bytes:
    """The completion a stored stream replays as."""
    return replay(entry(STREAM, events), stream=False, wants_usage=True).body


def to_events(completion: bytes, *, wants_usage: bool) -> bytes:
    """The stream a stored completion replays as."""
    return replay(entry(COMPLETION, completion), stream=True, wants_usage=wants_usage).body


def replay_events(events: bytes, *, wants_usage: bool) -> bytes:
    """The stream a stored stream replays as."""
    return replay(entry(STREAM, events), stream=True, wants_usage=wants_usage).body


def to_completion(stored: bytes) -> bytes:
    return replay(stored, stream=False, wants_usage=False).body


def to_stream(stored: bytes, *, wants_usage: bool) -> bytes:
    return replay(stored, stream=True, wants_usage=wants_usage).body


def chunks_of(events: bytes) -> list[dict[str, Any]]:
    payloads = SSEDecoder().feed(events)
    assert payloads[-1] == DONE
    return [msgspec.json.decode(p) for p in payloads[:-1]]


VARIANTS = {
    "text": {},
    "tools": {"tools": [TOOL]},
    "two choices": {"n": 2},
}


@pytest.mark.parametrize("body", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_stream_assembles_into_the_completion_it_adds_up_to(body: dict[str, Any]) -> None:
    live = answer(stream=True, stream_options={"include_usage": True}, **body)
    events = b"".join(render_events(live))
    assembled = msgspec.json.decode(assemble(events))
    validate("CreateChatCompletionResponse", assembled)
    direct = render_completion(answer(**body))
    assert assembled["id"] == live.id
    assert assembled["usage"] == direct["usage"]
    for got, want in zip(assembled["choices"], direct["choices"], strict=True):
        assert got["finish_reason"] == want["finish_reason"]
        assert got["message"]["content"] == want["message"]["content"]
        calls = [
            (c["type"], c["function"]["name"], c["function"]["arguments"]) for c in got["message"].get("tool_calls", [])
        ]
        wanted = [
            (c["type"], c["function"]["name"], c["function"]["arguments"])
            for c in want["message"].get("tool_calls") or []
        ]
        assert calls == wanted


@pytest.mark.parametrize("wants_usage", [True, False])
@pytest.mark.parametrize("body", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_completion_replays_as_a_live_stream(body: dict[str, Any], wants_usage: bool) -> None:
    completion = render_completion(answer(**body))
    chunks = chunks_of(to_events(msgspec.json.encode(completion), wants_usage=wants_usage))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["id"] == completion["id"]
        assert chunk["object"] == "chat.completion.chunk"
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == (1 if wants_usage else 0)
    if wants_usage:
        assert chunks[-1]["usage"] == completion["usage"]
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert all("usage" not in c for c in chunks)
    # The first chunk of each choice carries the role, the last its finish reason, as a live stream's do.
    for choice in completion["choices"]:
        own = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == choice["index"]]
        assert own[0]["delta"]["role"] == "assistant"
        assert own[-1]["finish_reason"] == choice["finish_reason"]
        assert all(c["finish_reason"] is None for c in own[:-1])
    # And it assembles back into the same answer.
    back = msgspec.json.decode(assemble(to_events(msgspec.json.encode(completion), wants_usage=True)))
    assert [c["message"] for c in back["choices"]] == [
        {k: v for k, v in c["message"].items() if k != "annotations"} for c in completion["choices"]
    ]


def test_content_replays_word_by_word() -> None:
    completion = render_completion(answer())
    chunks = chunks_of(to_events(msgspec.json.encode(completion), wants_usage=False))
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(pieces) == 6
    assert "".join(pieces) == completion["choices"][0]["message"]["content"]


def test_a_stored_stream_replays_as_it_came_with_or_without_its_usage_chunk() -> None:
    events = b"".join(render_events(answer(stream=True, stream_options={"include_usage": True})))
    assert replay_events(events, wants_usage=True) == events
    without = chunks_of(replay_events(events, wants_usage=False))
    assert len(without) == len(chunks_of(events)) - 1
    assert all(c["choices"] for c in without)


def test_entries_turn_into_either_form() -> None:
    completion = msgspec.json.encode(render_completion(answer()))
    events = b"".join(render_events(answer(stream=True, stream_options={"include_usage": True})))
    assert to_completion(entry(COMPLETION, completion)) == completion
    validate("CreateChatCompletionResponse", msgspec.json.decode(to_completion(entry(STREAM, events))))
    assert to_stream(entry(STREAM, events), wants_usage=True) == events
    for chunk in chunks_of(to_stream(entry(COMPLETION, completion), wants_usage=True)):
        validate("CreateChatCompletionStreamResponse", chunk)


def test_logprobs_survive_both_ways() -> None:
    logprobs = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}], "refusal": None}
    completion = render_completion(answer())
    completion["choices"][0]["logprobs"] = logprobs
    completion["choices"][0]["message"]["content"] = "Hi"
    events = to_events(msgspec.json.encode(completion), wants_usage=False)
    for chunk in chunks_of(events):
        validate("CreateChatCompletionStreamResponse", chunk)
    back = msgspec.json.decode(assemble(events))
    validate("CreateChatCompletionResponse", back)
    assert back["choices"][0]["logprobs"]["content"] == logprobs["content"]


DEEP = b"[" * 5000 + b"]" * 5000
UNREPLAYABLE = {
    "completion nesting 5,000 levels": b'C{"choices":[],"x":' + DEEP + b"}",
    "completion with 1e400": b'C{"choices":[],"x":1e400}',
    "completion with invalid UTF-8": b'C{"choices":[],"x":"caf\xe9"}',
    "completion whose choices are a string": b'C{"choices":"abc"}',
    "completion whose content is a number": b'C{"choices":[{"message":{"content":5}}]}',
    "completion whose tool call is a string": b'C{"choices":[{"message":{"tool_calls":["f"]}}]}',
    "completion with negative usage": b'C{"choices":[],"usage":{"prompt_tokens":-1}}',
    "completion with usage past 2^53": b'C{"choices":[],"usage":{"prompt_tokens":9007199254740992}}',
    "stream chunk nesting 5,000 levels": b'Sdata: {"x":' + DEEP + b"}\n\ndata: [DONE]\n\n",
    "stream whose delta is a string": b'Sdata: {"choices":[{"index":0,"delta":"abc"}]}\n\ndata: [DONE]\n\n',
    "stream whose index is a string": b'Sdata: {"choices":[{"index":"a","delta":{}}]}\n\ndata: [DONE]\n\n',
    "stream whose usage is a string": b'Sdata: {"choices":[],"usage":"abc"}\n\ndata: [DONE]\n\n',
    "stream whose chunk is not JSON": b"Sdata: {\n\ndata: [DONE]\n\n",
    "an unknown kind": b"Zjunk",
    "nothing": b"",
}


@pytest.mark.parametrize("stored", UNREPLAYABLE.values(), ids=UNREPLAYABLE.keys())
@pytest.mark.parametrize(("stream", "wants_usage"), [(False, False), (True, False), (True, True)])
def test_an_entry_that_does_not_read_whole_is_refused_in_every_form(
    stored: bytes, stream: bool, wants_usage: bool
) -> None:
    assert not replayable(stored)
    with pytest.raises(UnreadableAnswerError):
        replay(stored, stream=stream, wants_usage=wants_usage)
