"""A RAG route that knows when it does not know (issue 18, point 4), through the real server and the official SDK.

The index of `tests/e2e/test_rag.py`, behind two RAG routes whose floor (`min_score: 0.99`) no passage
reaches: `strict` answers with its fixed `no_context` text, `handed` hands the request to `gpt4`. Neither
asks the answering model (`support-ft`) anything; both say `x-turnout-rag: no-context`, in both stream
forms and in the Responses API, and `/metrics` counts them by route.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import RunningProcess, SimulatorCalls, new_request_id, running, sdk_client, start_turnout
from tests.e2e.test_rag import POLICY as RAG_POLICY
from tests.e2e.test_rag import setup
from tests.openapi import validate

__all__ = ["setup"]

POLICY = (
    RAG_POLICY[: RAG_POLICY.index("  docs:")]
    + """  strict:
    kind: rag
    index: ./index
    answer_with: support-ft
    min_score: 0.99
    no_context: {answer: "Our documents do not say."}
  handed: {kind: rag, index: ./index, answer_with: support-ft, min_score: 0.99, no_context: {route: gpt4}}
rules:
  - name: default
    route: gpt4
"""
)
TEXT = "Our documents do not say."


@pytest.fixture(scope="module")
def served(setup: tuple[Path, dict[str, str]]) -> Iterator[RunningProcess]:
    policy, env = setup
    strict = policy.parent / "no-context.yaml"
    strict.write_text(POLICY, encoding="utf-8")
    with running(start_turnout({**env, "TURNOUT_CONFIG": str(strict)})) as process:
        yield process


@pytest.fixture(scope="module")
def sdk(served: RunningProcess) -> Iterator[openai.OpenAI]:
    client = sdk_client(served.origin)
    yield client
    client.close()


def _asked() -> list[Any]:
    return [{"role": "user", "content": f"Which colour is the moon on Tuesdays? ({uuid.uuid4().hex[:8]})"}]


def _no_context_total(origin: str, route: str) -> float:
    for line in httpx.get(f"{origin}/metrics", timeout=10).text.splitlines():
        if line.startswith(f'turnout_rag_no_context_total{{route="{route}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_fixed_answer_in_both_stream_forms_and_no_model_call(
    served: RunningProcess, sdk: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    before = _no_context_total(served.origin, "strict")
    whole_id, stream_id = new_request_id(), new_request_id()
    raw = sdk.chat.completions.with_raw_response.create(
        model="strict", messages=_asked(), extra_headers={"x-request-id": whole_id}
    )
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rag"]) == ("strict", "no-context")
    assert "x-turnout-sources" not in raw.headers
    validate("CreateChatCompletionResponse", json.loads(raw.http_response.text))
    completion = raw.parse()
    assert completion.model == "strict"
    assert completion.choices[0].message.content == TEXT
    assert (completion.model_extra or {})["turnout_sources"] == []
    assert completion.usage is not None
    assert completion.usage.total_tokens == 0
    with sdk.chat.completions.with_streaming_response.create(
        model="strict",
        messages=_asked(),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": stream_id},
    ) as response:
        assert response.headers["x-turnout-rag"] == "no-context"
        chunks = list(response.parse())
    assert (chunks[0].model_extra or {})["turnout_sources"] == []
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == TEXT
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 0
    assert simulator_call.find(whole_id) is None
    assert simulator_call.find(stream_id) is None
    assert _no_context_total(served.origin, "strict") == before + 2


def test_the_fixed_answer_in_the_responses_api(
    served: RunningProcess, sdk: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    whole_id, stream_id = new_request_id(), new_request_id()
    asked = _asked()[0]["content"]
    raw = sdk.responses.with_raw_response.create(model="strict", input=asked, extra_headers={"x-request-id": whole_id})
    assert raw.headers["x-turnout-rag"] == "no-context"
    validate("Response", json.loads(raw.http_response.text))
    response = raw.parse()
    assert (response.status, response.output_text) == ("completed", TEXT)
    assert (response.model_extra or {})["turnout_sources"] == []
    with sdk.responses.with_streaming_response.create(
        model="strict", input=asked, stream=True, extra_headers={"x-request-id": stream_id}
    ) as streamed:
        assert streamed.headers["x-turnout-rag"] == "no-context"
        events = list(streamed.parse())
    assert (events[0].type, events[-1].type) == ("response.created", "response.completed")
    assert (events[0].model_extra or {})["turnout_sources"] == []
    assert "".join(event.delta for event in events if event.type == "response.output_text.delta") == TEXT
    assert simulator_call.find(whole_id) is None
    assert simulator_call.find(stream_id) is None


def test_the_request_handed_to_another_route_as_it_came(
    served: RunningProcess, sdk: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    before = _no_context_total(served.origin, "handed")
    messages = _asked()
    whole_id, stream_id = new_request_id(), new_request_id()
    raw = sdk.chat.completions.with_raw_response.create(
        model="handed", messages=messages, extra_headers={"x-request-id": whole_id}
    )
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rag"]) == ("handed", "no-context")
    assert raw.parse().model == "gpt-4"
    sent = simulator_call(whole_id)["body"]
    assert (sent["model"], sent["messages"]) == ("gpt-4", messages)  # no passages, no RAG instruction
    with sdk.chat.completions.with_streaming_response.create(
        model="handed", messages=messages, stream=True, extra_headers={"x-request-id": stream_id}
    ) as response:
        assert response.headers["x-turnout-rag"] == "no-context"
        chunks = list(response.parse())
    assert (chunks[0].model_extra or {})["turnout_sources"] == []
    assert simulator_call(stream_id)["body"]["model"] == "gpt-4"
    asked = messages[0]["content"]
    handed = sdk.responses.with_raw_response.create(model="handed", input=asked)
    assert handed.headers["x-turnout-rag"] == "no-context"
    assert handed.parse().output_text
    assert _no_context_total(served.origin, "handed") == before + 3


def test_a_cached_no_context_answer_says_so_again(sdk: openai.OpenAI) -> None:
    messages = _asked()
    first = sdk.chat.completions.with_raw_response.create(model="strict", messages=messages, temperature=0)
    again = sdk.chat.completions.with_raw_response.create(model="strict", messages=messages, temperature=0)
    assert (first.headers["x-turnout-cache"], again.headers["x-turnout-cache"]) == ("miss", "hit")
    assert again.headers["x-turnout-rag"] == "no-context"
    assert (again.parse().model_extra or {})["turnout_sources"] == []
