"""The RAG route answering the Responses API through the real server (issue 13, point 1).

Same documents and policy as `tests/e2e/test_rag.py`: the passages lead the request's `instructions`, the
client's own instructions follow, and the sources come back in the header and in a `turnout_sources` field.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

import openai

from tests.e2e.conftest import SimulatorCalls, new_request_id
from tests.e2e.test_rag import FT, QUESTION, rag, setup
from tests.openapi import validate

__all__ = ["rag", "setup"]  # the fixtures, shared with the chat tests of the RAG route

ASKED = QUESTION[0]["content"]


def test_a_response_is_answered_from_the_documents(rag: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    raw = rag.responses.with_raw_response.create(
        model="gpt-4o", input=ASKED, instructions="Answer in French.", extra_headers={"x-request-id": request_id}
    )
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rule"]) == ("docs", "documented")
    assert unquote(raw.headers["x-turnout-sources"]).split(", ")[0] == "docs/refunds.md#Billing > Refunds"
    body = json.loads(raw.http_response.text)
    validate("Response", body)
    response = raw.parse()
    assert response.model == FT
    assert response.output_text
    assert (response.model_extra or {})["turnout_sources"][0]["source"] == "docs/refunds.md"
    sent = simulator_call(request_id)["body"]
    assert sent["input"] == ASKED
    assert "only the numbered passages" in sent["instructions"]
    assert "[1] (docs/refunds.md - Billing > Refunds)" in sent["instructions"]
    assert sent["instructions"].endswith("\n\nAnswer in French.")


def test_a_response_stream_carries_the_sources_in_its_first_event(
    rag: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    request_id = new_request_id()
    with rag.responses.with_streaming_response.create(
        model="gpt-4o",
        input=[{"role": "user", "content": ASKED}],
        stream=True,
        extra_headers={"x-request-id": request_id},
    ) as raw:
        assert raw.headers["x-turnout-route"] == "docs"
        events = list(raw.parse())
    assert events[0].type == "response.created"
    assert (events[0].model_extra or {})["turnout_sources"][0]["source"] == "docs/refunds.md"
    assert events[-1].type == "response.completed"
    assert "[1] (docs/refunds.md" in simulator_call(request_id)["body"]["instructions"]
