"""A RAG answer's citations on a cache hit (`proxy.endpoints.cited`), in each stored form and each form replayed."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proxy.endpoints import chat_replay, responses_replay
from proxy.endpoints.cited import headers_of
from proxy.wire.answers import UnreadableAnswerError
from proxy.wire.sse import event_data, split_events

SOURCES = [{"index": 1, "source": "docs/a b.md", "heading": "Billing > Refunds", "position": 0, "similarity": 0.5}]
HEADER = ("x-turnout-sources", "docs/a%20b.md#Billing%20%3E%20Refunds")
COMPLETION: dict[str, Any] = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "In 30 days."}, "finish_reason": "stop"}],
    "turnout_sources": SOURCES,
}
RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-4",
    "output": [
        {"type": "message", "id": "m1", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}
    ],
    "turnout_sources": SOURCES,
}


def _events(body: bytes) -> list[dict[str, Any]]:
    datas = (event_data(event) for event in split_events(body))
    return [msgspec.json.decode(data) for data in datas if data and data != b"[DONE]"]


def test_a_stored_completion_keeps_its_sources_whole_and_as_a_stream() -> None:
    stored = chat_replay.entry(chat_replay.COMPLETION, msgspec.json.encode(COMPLETION))
    whole = chat_replay.replay(stored, stream=False, wants_usage=False)
    assert (whole.headers, msgspec.json.decode(whole.body)["turnout_sources"]) == ((HEADER,), SOURCES)
    streamed = chat_replay.replay(stored, stream=True, wants_usage=False)
    chunks = _events(streamed.body)
    assert streamed.headers == (HEADER,)
    assert chunks[0]["turnout_sources"] == SOURCES
    assert all("turnout_sources" not in chunk for chunk in chunks[1:])
    again = chat_replay.replay(chat_replay.entry(chat_replay.STREAM, streamed.body), stream=False, wants_usage=False)
    assert (again.headers, msgspec.json.decode(again.body)["turnout_sources"]) == ((HEADER,), SOURCES)


def test_a_stored_response_keeps_its_sources_whole_and_as_a_stream() -> None:
    stored = responses_replay.entry(responses_replay.RESPONSE, msgspec.json.encode(RESPONSE))
    streamed = responses_replay.replay(stored, stream=True)
    events = _events(streamed.body)
    assert streamed.headers == (HEADER,)
    assert (events[0]["type"], events[0]["turnout_sources"]) == ("response.created", SOURCES)
    assert all(
        "turnout_sources" not in event and "turnout_sources" not in event.get("response", {}) for event in events[1:]
    )
    whole = responses_replay.replay(responses_replay.entry(responses_replay.STREAM, streamed.body), stream=False)
    assert (whole.headers, msgspec.json.decode(whole.body)["turnout_sources"]) == ((HEADER,), SOURCES)


def test_an_answer_without_sources_gets_no_header_and_bad_sources_do_not_replay() -> None:
    plain = {key: value for key, value in COMPLETION.items() if key != "turnout_sources"}
    stored = chat_replay.entry(chat_replay.COMPLETION, msgspec.json.encode(plain))
    assert chat_replay.replay(stored, stream=True, wants_usage=False).headers == ()
    assert b"turnout_sources" not in chat_replay.replay(stored, stream=True, wants_usage=False).body
    assert headers_of(None) == ()
    with pytest.raises(UnreadableAnswerError, match="turnout_sources"):
        headers_of([{"source": 3}])
    broken = chat_replay.entry(chat_replay.COMPLETION, msgspec.json.encode({**COMPLETION, "turnout_sources": "x"}))
    assert not chat_replay.replayable(broken)  # never stored, and a stored one is a miss
