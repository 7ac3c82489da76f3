"""The response cache through the real server and the official SDK, on a real Redis shared by two replicas."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import delete_prefixed
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

POLICY = """\
upstreams:
  sim: {{base_url: "{upstream}", api_key: "${{OPENAI_API_KEY}}"}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
cache: {{url: "{redis_url}", key_prefix: "{prefix}"}}
rules:
  - name: default
    route: gpt4
"""


@pytest.fixture(scope="module")
def replicas(
    simulator: RunningProcess, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningProcess, RunningProcess]]:
    """Two Turnout processes sharing one Redis cache."""
    path: Path = tmp_path_factory.mktemp("cache") / "policy.yaml"
    prefix = f"turnout-e2e-{uuid.uuid4().hex[:12]}"
    path.write_text(POLICY.format(upstream=f"{simulator.origin}/v1", redis_url=redis_url, prefix=prefix))
    env = {**turnout_env(simulator), "TURNOUT_CONFIG": str(path)}
    with running(start_turnout(env)) as one, running(start_turnout(env)) as two:
        yield one, two
    delete_prefixed(redis_url, prefix)


def question() -> list[Any]:
    return [{"role": "user", "content": f"What is the capital of France? ({uuid.uuid4().hex[:8]})"}]


def test_a_repeated_completion_is_a_hit_with_no_upstream_call(
    replicas: tuple[RunningProcess, RunningProcess], simulator_call: SimulatorCalls
) -> None:
    one, two = replicas
    messages = question()
    with sdk_client(one.origin) as sdk:
        first = sdk.chat.completions.with_raw_response.create(model="gpt-4", messages=messages, temperature=0)
        second_id = new_request_id()
        second = sdk.chat.completions.with_raw_response.create(
            model="gpt-4", messages=messages, temperature=0, extra_headers={"x-request-id": second_id}
        )
    assert first.headers["x-turnout-cache"] == "miss"
    assert second.headers["x-turnout-cache"] == "hit"
    validate("CreateChatCompletionResponse", second.http_response.json())
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert simulator_call.find(second_id) is None

    with sdk_client(two.origin) as sdk:  # the other replica: the same answer, from Redis
        other_id = new_request_id()
        other = sdk.chat.completions.with_raw_response.create(
            model="gpt-4", messages=messages, temperature=0, extra_headers={"x-request-id": other_id}
        )
    assert other.headers["x-turnout-cache"] == "hit"
    assert other.parse().id == first.parse().id
    assert simulator_call.find(other_id) is None


def stream_chunks(sdk: openai.OpenAI, messages: list[Any], request_id: str, **extra: Any) -> tuple[str, list[Any]]:
    """(x-turnout-cache, the chunks as the SDK parsed them), each chunk checked against OpenAI's schema."""
    with sdk.chat.completions.with_streaming_response.create(
        model="gpt-4",
        messages=messages,
        temperature=0,
        stream=True,
        extra_headers={"x-request-id": request_id},
        **extra,
    ) as response:
        status = response.headers["x-turnout-cache"]
        chunks = []
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                payload = json.loads(line[6:])
                validate("CreateChatCompletionStreamResponse", payload)
                chunks.append(payload)
    return status, chunks


def test_a_repeated_stream_replays_as_a_stream_and_as_a_completion(
    replicas: tuple[RunningProcess, RunningProcess], simulator_call: SimulatorCalls
) -> None:
    one, two = replicas
    messages = question()
    with sdk_client(one.origin) as sdk:
        live_status, live = stream_chunks(sdk, messages, new_request_id())
        replay_id = new_request_id()
        replay_status, replayed = stream_chunks(sdk, messages, replay_id)
    assert (live_status, replay_status) == ("miss", "hit")
    assert replayed == live
    assert simulator_call.find(replay_id) is None

    with sdk_client(two.origin) as sdk:
        usage_id = new_request_id()
        status, with_usage = stream_chunks(sdk, messages, usage_id, stream_options={"include_usage": True})
        assert status == "hit"
        assert with_usage[-1]["choices"] == []
        assert with_usage[-1]["usage"]["completion_tokens"] > 0
        # The SDK's own stream parser reads the replay too.
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in sdk.chat.completions.create(model="gpt-4", messages=messages, temperature=0, stream=True)
            if chunk.choices
        )
        completion = sdk.chat.completions.with_raw_response.create(model="gpt-4", messages=messages, temperature=0)
    assert simulator_call.find(usage_id) is None
    assert completion.headers["x-turnout-cache"] == "hit"
    validate("CreateChatCompletionResponse", completion.http_response.json())
    live_text = "".join(c["choices"][0]["delta"].get("content") or "" for c in live if c["choices"])
    assert text == live_text
    assert completion.parse().choices[0].message.content == live_text


def test_no_cache_from_the_sdk_asks_the_upstream(
    replicas: tuple[RunningProcess, RunningProcess], simulator_call: SimulatorCalls
) -> None:
    one, _ = replicas
    messages = question()
    with sdk_client(one.origin) as sdk:
        sdk.chat.completions.create(model="gpt-4", messages=messages, temperature=0)
        request_id = new_request_id()
        fresh = sdk.chat.completions.with_raw_response.create(
            model="gpt-4",
            messages=messages,
            temperature=0,
            extra_headers={"x-request-id": request_id, "cache-control": "no-cache"},
        )
    assert fresh.headers["x-turnout-cache"] == "bypass"
    assert simulator_call(request_id)["body"]["messages"] == messages


def test_a_stream_the_client_abandons_is_not_stored(
    replicas: tuple[RunningProcess, RunningProcess], simulator_call: SimulatorCalls
) -> None:
    one, _ = replicas
    messages = question()
    slow = {"x-simulated-chunks": "50", "x-simulated-chunk-interval-ms": "50"}
    with sdk_client(one.origin) as sdk:
        request_id = new_request_id()
        stream = sdk.chat.completions.create(
            model="gpt-4",
            messages=messages,
            temperature=0,
            stream=True,
            extra_headers={"x-request-id": request_id, **slow},
        )
        next(stream)
        next(stream)
        stream.close()
        record = simulator_call.wait_for(request_id, lambda call: call["outcome"] == "cancelled", timeout=5.0)
        assert record is not None
        assert record["outcome"] == "cancelled"
        again = sdk.chat.completions.with_raw_response.create(model="gpt-4", messages=messages, temperature=0)
    assert again.headers["x-turnout-cache"] == "miss"
