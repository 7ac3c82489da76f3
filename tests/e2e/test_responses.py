"""The Responses API through the real server, driven by the official SDK (strict validation), on the simulator.

`client.responses.create` whole and streamed, the `responses.stream(...)` helper, `retrieve`, `delete`,
`input_items.list`, `cancel`, `previous_response_id`; the cost headers and metrics; a client that leaves; and
the response id → upstream map in a Redis shared by two Turnout processes (issue 13, points 1 and 8).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import delete_prefixed
from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    new_request_id,
    running,
    sdk_client,
    start_simulator,
    start_turnout,
    turnout_env,
)
from tests.e2e.test_chat import wait_for_log_line
from tests.openapi import validate

MODEL = "gpt-4o"


def test_a_response_is_created_whole_and_validates(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model=MODEL, input="Hello", instructions="Be brief.")
    response = raw.parse()
    validate("Response", json.loads(raw.content))
    assert response.id.startswith("resp_")
    assert response.output_text
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert float(raw.headers["x-turnout-cost-usd"]) > 0


def test_a_response_streams_as_typed_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="Hello", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == events[-1].response.output_text


def test_the_stream_helper_gives_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Hello") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text


def test_a_stored_response_is_retrieved_listed_continued_and_deleted(client: openai.OpenAI) -> None:
    made = client.responses.create(model=MODEL, input=[{"role": "user", "content": "First"}])
    assert client.responses.retrieve(made.id).id == made.id
    items = client.responses.input_items.list(made.id)
    assert [item.type for item in items.data] == ["message"]
    follow = client.responses.create(model=MODEL, input="Second", previous_response_id=made.id)
    assert follow.previous_response_id == made.id
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=MODEL, input="Third", previous_response_id=made.id)
    assert caught.value.param == "previous_response_id"  # type: ignore[attr-defined,unused-ignore]


def test_a_background_response_is_cancelled(client: openai.OpenAI) -> None:
    made = client.responses.create(
        model=MODEL, input="Slowly", background=True, extra_headers={"x-simulated-latency-ms": "60000"}
    )
    assert made.status == "queued"
    assert client.responses.cancel(made.id).status == "cancelled"


def test_function_tools_are_called(client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    }
    response = client.responses.create(model=MODEL, input="Rain in Paris?", tools=[tool])  # type: ignore[list-item]
    call = response.output[0]
    assert call.type == "function_call"
    assert json.loads(call.arguments) == {"city": "simulated"}


def test_an_error_midstream_is_an_error_event(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model=MODEL, input="Hello", stream=True, extra_headers={"x-simulated-fault": "midstream"}
    )
    events = list(stream)
    assert events[-1].type == "error"
    assert events[-1].sequence_number == events[-2].sequence_number + 1


def test_an_error_before_the_stream_is_a_json_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model=MODEL, input="Hello", stream=True, extra_headers={"x-simulated-fault": "429"})


def test_the_metrics_count_responses_and_their_cost(client: openai.OpenAI, turnout: RunningProcess) -> None:
    def tokens() -> float:
        text = httpx.get(f"{turnout.origin}/metrics", timeout=10.0).text
        found = re.findall(r'^turnout_tokens_total\{[^}]*kind="completion"[^}]*\} (\S+)$', text, re.MULTILINE)
        return sum(float(value) for value in found)

    before = tokens()
    response = client.responses.create(model=MODEL, input="Count me", extra_headers={"x-simulated-chunks": "7"})
    assert response.usage is not None
    assert tokens() - before == response.usage.output_tokens == 7


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_takes_its_upstream_call_with_it(
    client: openai.OpenAI, turnout: RunningProcess, simulator_call: SimulatorCalls, stream: bool
) -> None:
    """Whole: the SDK times out; streamed: it closes the stream after the first event. The upstream call goes too."""
    request_id = new_request_id()
    slow = {"x-request-id": request_id}
    if stream:
        slow.update({"x-simulated-chunk-interval-ms": "500", "x-simulated-chunks": "40"})
        with client.responses.create(model=MODEL, input="Hello", stream=True, extra_headers=slow) as events:
            assert next(iter(events)).type == "response.created"
    else:
        slow["x-simulated-latency-ms"] = "20000"
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.5).responses.create(model=MODEL, input="Hello", extra_headers=slow)
    left_at = time.time()
    record = simulator_call.wait_for(request_id, lambda call: call["outcome"] == "cancelled", timeout=5.0)
    assert record is not None
    assert record["outcome"] == "cancelled", record
    assert record["cancelled_at"] - left_at < 1.0
    if not stream:  # nothing was reported, nothing is charged
        line = wait_for_log_line(turnout, request_id)
        assert (line["status"], line.get("cost_usd")) == (499, None)


# --- two replicas, two upstreams, one Redis ---------------------------------------------------------------

POLICY = """\
upstreams:
  one: {{base_url: "{one}", api_key: "${{OPENAI_API_KEY}}"}}
  two: {{base_url: "{two}", api_key: "${{OPENAI_API_KEY}}"}}
routes:
  first: {{upstream: one, model: gpt-4o}}
  second: {{upstream: two, model: gpt-4o-mini}}
cache: {{url: "{redis_url}", key_prefix: "{prefix}"}}
rules:
  - name: other
    when: {{metadata: {{side: "two"}}}}
    route: second
  - name: default
    route: first
"""


@pytest.fixture(scope="module")
def replicas(
    simulator: RunningProcess, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningProcess, RunningProcess]]:
    """Two Turnout processes sharing one Redis, over two upstreams."""
    path: Path = tmp_path_factory.mktemp("responses") / "policy.yaml"
    prefix = f"turnout-e2e-{uuid.uuid4().hex[:12]}"
    with running(start_simulator()) as second:
        one, two = f"{simulator.origin}/v1", f"{second.origin}/v1"
        path.write_text(POLICY.format(one=one, two=two, redis_url=redis_url, prefix=prefix))
        env = {**turnout_env(simulator), "TURNOUT_CONFIG": str(path)}
        with running(start_turnout(env)) as first, running(start_turnout(env)) as other:
            yield first, other
    delete_prefixed(redis_url, prefix)


def test_a_response_made_through_one_replica_is_found_through_the_other(
    replicas: tuple[RunningProcess, RunningProcess],
) -> None:
    with sdk_client(replicas[0].origin) as one, sdk_client(replicas[1].origin) as other:
        made = one.responses.create(model=MODEL, input="Hello", metadata={"side": "two"})
        assert made.model == "gpt-4o-mini"
        assert other.responses.retrieve(made.id).id == made.id  # the default upstream (one) does not hold it
        assert other.responses.input_items.list(made.id).data
        with other.responses.with_streaming_response.create(
            model=MODEL, input="Again", previous_response_id=made.id
        ) as raw:
            assert raw.headers["x-turnout-route"] == "second"
        streamed = list(one.responses.create(model=MODEL, input="Hi", metadata={"side": "two"}, stream=True))
        assert other.responses.retrieve(streamed[0].response.id).status == "completed"  # type: ignore[union-attr]
        other.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            one.responses.retrieve(made.id)
