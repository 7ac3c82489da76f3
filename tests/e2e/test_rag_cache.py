"""A cached RAG answer keeps its citations (issue 18, point 5), through the real server and the official SDK.

Same documents and policy as `tests/e2e/test_rag.py` (the in-process cache is on by default; `temperature: 0`
makes a request cacheable). Each test asks once, live, in one form, then again in every form: each hit
carries the live answer's `x-turnout-sources` header and its `turnout_sources` field (on the completion,
on a stream's first chunk, on the `Response`, on a stream's `response.created` event), and calls no model.
"""

from __future__ import annotations

import uuid
from typing import Any

import openai

from tests.e2e.conftest import SimulatorCalls, new_request_id
from tests.e2e.test_rag import rag, setup

__all__ = ["rag", "setup"]  # the fixtures, shared with the chat tests of the RAG route


def _question() -> list[Any]:
    return [{"role": "user", "content": f"How many days until refunds are paid back? ({uuid.uuid4().hex[:8]})"}]


def _completion(sdk: openai.OpenAI, messages: list[Any], request_id: str) -> tuple[str, str, Any]:
    raw = sdk.chat.completions.with_raw_response.create(
        model="docs", messages=messages, temperature=0, extra_headers={"x-request-id": request_id}
    )
    extra = raw.parse().model_extra or {}
    return raw.headers["x-turnout-cache"], raw.headers.get("x-turnout-sources", ""), extra.get("turnout_sources")


def _stream(sdk: openai.OpenAI, messages: list[Any], request_id: str) -> tuple[str, str, Any]:
    with sdk.chat.completions.with_streaming_response.create(
        model="docs", messages=messages, temperature=0, stream=True, extra_headers={"x-request-id": request_id}
    ) as raw:
        cache, header = raw.headers["x-turnout-cache"], raw.headers.get("x-turnout-sources", "")
        chunks = list(raw.parse())
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all("turnout_sources" not in (chunk.model_extra or {}) for chunk in chunks[1:])
    return cache, header, (chunks[0].model_extra or {}).get("turnout_sources")


def _response(sdk: openai.OpenAI, asked: str, request_id: str) -> tuple[str, str, Any]:
    raw = sdk.responses.with_raw_response.create(
        model="docs", input=asked, temperature=0, extra_headers={"x-request-id": request_id}
    )
    response = raw.parse()
    assert response.output_text
    extra = response.model_extra or {}
    return raw.headers["x-turnout-cache"], raw.headers.get("x-turnout-sources", ""), extra.get("turnout_sources")


def _response_stream(sdk: openai.OpenAI, asked: str, request_id: str) -> tuple[str, str, Any]:
    with sdk.responses.with_streaming_response.create(
        model="docs", input=asked, temperature=0, stream=True, extra_headers={"x-request-id": request_id}
    ) as raw:
        cache, header = raw.headers["x-turnout-cache"], raw.headers.get("x-turnout-sources", "")
        events = list(raw.parse())
    assert (events[0].type, events[-1].type) == ("response.created", "response.completed")
    return cache, header, (events[0].model_extra or {}).get("turnout_sources")


def test_a_cached_completion_keeps_its_sources_in_both_forms(
    rag: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    messages = _question()
    cache, header, sources = _completion(rag, messages, new_request_id())
    assert cache == "miss"
    assert "refunds.md" in header
    assert sources[0]["source"] == "docs/refunds.md"
    for ask in (_completion, _stream):  # the stored completion, whole and replayed as a stream
        request_id = new_request_id()
        assert ask(rag, messages, request_id) == ("hit", header, sources)
        assert simulator_call.find(request_id) is None


def test_a_cached_stream_keeps_its_sources_in_both_forms(rag: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    messages = _question()
    cache, header, sources = _stream(rag, messages, new_request_id())
    assert cache == "miss"
    assert "refunds.md" in header
    assert sources[0]["heading"] == "Billing > Refunds"
    for ask in (_stream, _completion):  # the stored stream, as it came and assembled into a completion
        request_id = new_request_id()
        assert ask(rag, messages, request_id) == ("hit", header, sources)
        assert simulator_call.find(request_id) is None


def test_a_cached_response_keeps_its_sources_in_both_forms(rag: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    for first, then in ((_response, _response_stream), (_response_stream, _response)):
        asked = _question()[0]["content"]
        cache, header, sources = first(rag, asked, new_request_id())
        assert cache == "miss"
        assert "refunds.md" in header
        assert sources[0]["source"] == "docs/refunds.md"
        for ask in (first, then):
            request_id = new_request_id()
            assert ask(rag, asked, request_id) == ("hit", header, sources)
            assert simulator_call.find(request_id) is None
