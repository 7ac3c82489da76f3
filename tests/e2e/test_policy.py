"""A policy file served by the real `turnout serve`, driven by the official SDK: routes, headers, fallbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_env,
)
from tests.openapi import validate

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
POLICY = """
upstreams:
  sim:
    base_url: ${SIM_URL}
    api_key: ${OPENAI_API_KEY}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt4: {upstream: sim, model: gpt-4}
aliases: {support: support-ft}
baseline: gpt4
rules:
  - name: tools
    when: {has_tools: true}
    route: gpt4
  - name: default
    route: support-ft
    fallback: [gpt4]
"""
MESSAGES: list[Any] = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture(scope="module")
def routed(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    policy = Path(tmp_path_factory.mktemp("policy")) / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    with running(start_turnout(env)) as process:
        client = sdk_client(process.origin)
        yield client
        client.close()


def test_the_policy_routes_and_the_headers_say_how(routed: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    raw = routed.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-request-id": request_id}
    )
    assert raw.headers["x-turnout-route"] == "support-ft"
    assert raw.headers["x-turnout-rule"] == "default"
    body = json.loads(raw.http_response.text)
    validate("CreateChatCompletionResponse", body)
    assert raw.parse().model == FT == body["model"]
    assert simulator_call(request_id)["body"]["model"] == FT


def test_a_stream_through_a_rule(routed: openai.OpenAI) -> None:
    tool: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    with routed.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, tools=[tool], stream=True
    ) as response:
        assert response.headers["x-turnout-route"] == "gpt4"
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert {chunk["model"] for chunk in chunks} == {"gpt-4"}


def test_a_fallback_is_visible(routed: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    headers = {"x-simulated-fault": "503", "x-simulated-fault-for": FT, "x-request-id": request_id}
    raw = routed.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    assert raw.headers["x-turnout-route"] == "gpt4"
    assert raw.headers["x-turnout-fallback-from"] == "support-ft"
    assert raw.parse().model == "gpt-4"
    assert simulator_call(request_id)["models"] == [FT, "gpt-4"]


def test_models_are_the_routes_and_aliases(routed: openai.OpenAI) -> None:
    raw = routed.models.with_raw_response.list()
    validate("ListModelsResponse", json.loads(raw.http_response.text))
    assert [model.id for model in raw.parse()][:3] == ["support-ft", "gpt4", "support"]  # then the upstream's
    assert routed.models.retrieve("support").id == "support"
    with pytest.raises(openai.NotFoundError):
        routed.models.retrieve("gpt-does-not-exist")


def test_a_route_or_alias_as_model_picks_it(routed: openai.OpenAI) -> None:
    raw = routed.chat.completions.with_raw_response.create(model="gpt4", messages=MESSAGES)
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rule"]) == ("gpt4", "model")
    assert raw.parse().model == "gpt-4"
