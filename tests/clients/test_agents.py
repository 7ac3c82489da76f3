"""The OpenAI Agents SDK (`openai-agents`) against Turnout: an `Agent` with the SDK's default model, run with `Runner`.

A team points the SDK at Turnout with `set_default_openai_client(AsyncOpenAI(base_url=...))`. The SDK then calls
the Responses API (its default) for its default model; `set_default_openai_api("chat_completions")` is the other
API it offers. Tracing is off (it would export to OpenAI): `OPENAI_AGENTS_DISABLE_TRACING`, set by the conftest,
and `set_tracing_disabled`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    RunConfig,
    Runner,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import get_default_model

from tests.clients.conftest import CLIENT_KEY
from tests.e2e.conftest import SimulatorCalls, new_request_id

PROMPT = "Where is my order?"


@pytest.fixture
async def pointed_at_turnout(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The SDK's default client is Turnout's (per test: its connections belong to the test's event loop)."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20) as client:
        set_default_openai_client(client, use_for_tracing=False)
        set_tracing_disabled(True)
        try:
            yield client
        finally:
            set_default_openai_api("responses")  # the SDK's own default, for whatever runs next


def agent() -> Agent:
    return Agent(name="Support", instructions="Answer in one sentence.")  # no `model`: the SDK's default


def tagged(request_id: str) -> RunConfig:
    """A run whose model calls carry `x-request-id`, so that the simulator's record of them can be read back."""
    return RunConfig(model_settings=ModelSettings(extra_headers={"x-request-id": request_id}))


@pytest.mark.usefixtures("pointed_at_turnout")
async def test_an_agent_with_the_default_model_runs_on_the_responses_api(simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    result = await Runner.run(agent(), PROMPT, run_config=tagged(request_id))
    assert isinstance(result.final_output, str)
    assert result.final_output.strip()
    (response,) = result.raw_responses
    assert response.usage.output_tokens > 0
    assert response.response_id is not None
    assert response.response_id.startswith("resp_")  # a Responses API answer, not a chat completion
    assert simulator_call(request_id)["body"]["model"] == get_default_model()


@pytest.mark.usefixtures("pointed_at_turnout")
async def test_an_agent_streams_on_the_responses_api() -> None:
    result = Runner.run_streamed(agent(), PROMPT)
    deltas = [
        event.data.delta
        async for event in result.stream_events()
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
    ]
    assert len(deltas) > 1
    assert "".join(deltas) == result.final_output


@pytest.mark.usefixtures("pointed_at_turnout")
async def test_an_agent_on_chat_completions(simulator_call: SimulatorCalls) -> None:
    set_default_openai_api("chat_completions")
    request_id = new_request_id()
    result = await Runner.run(agent(), PROMPT, run_config=tagged(request_id))
    assert isinstance(result.final_output, str)
    assert result.final_output.strip()
    assert result.raw_responses[0].usage.output_tokens > 0
    call = simulator_call(request_id)
    assert call["body"]["model"] == get_default_model()
    assert call["body"]["messages"][0] == {"role": "system", "content": "Answer in one sentence."}
