"""Traces from the real `turnout serve` to a real OTLP/HTTP receiver: the simulator is the upstream, the SDK the client.

The receiver (`tests.otlp_receiver`) decodes the protobuf the SDK's exporter posts; the simulator records the
`traceparent` each attempt carried. Asserted: span names, kinds and GenAI attributes, parent and child, the client's
trace continued, retries and fallbacks as events, and the header the upstream saw.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    lower_keys,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_env,
)
from tests.e2e.test_policy import FT, MESSAGES
from tests.e2e.test_policy import POLICY as ROUTED_POLICY
from tests.otlp_receiver import ReceivedSpan, Receiver, otlp_receiver

# test_policy's file (a fine-tune with GPT-4 as its fallback), with one retry and a service name for the traces.
POLICY = (
    ROUTED_POLICY
    + """retry: {attempts: 1, backoff: 0.01}
tracing: {service_name: turnout-e2e}
"""
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as running_receiver:
        yield running_receiver


@pytest.fixture(scope="module")
def traced(
    simulator: RunningProcess, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    policy = Path(tmp_path_factory.mktemp("policy")) / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(
        simulator,
        TURNOUT_CONFIG=str(policy),
        SIM_URL=f"{simulator.origin}/v1",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="50",  # the SDK's batch delay, in ms (5 s by default)
    )
    with running(start_turnout(env)) as process:
        client = sdk_client(process.origin)
        yield client
        client.close()


def traceparent() -> tuple[str, str, str]:
    """A client's trace: (trace id, span id, the header)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def only(spans: list[ReceivedSpan], kind: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.kind == kind]


def test_a_request_and_its_attempt_continue_the_clients_trace(
    traced: openai.OpenAI, receiver: Receiver, simulator_call: SimulatorCalls
) -> None:
    trace_id, client_span, header = traceparent()
    request_id = new_request_id()
    raw = traced.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=50,
        extra_headers={"traceparent": header, "tracestate": "acme=1", "x-request-id": request_id},
    )
    usage = raw.parse().usage
    assert usage is not None
    spans = receiver.trace(trace_id, 2)
    [request], [attempt] = only(spans, "server"), only(spans, "client")
    assert request.parent_id == client_span
    assert request.name == "POST /v1/chat/completions"
    assert request.resource["service.name"] == "turnout-e2e"
    assert request.attributes["turnout.request_id"] == request_id
    assert request.attributes["turnout.route"] == "support-ft"
    assert request.attributes["turnout.rule"] == "default"
    assert request.attributes["turnout.cache"] == "bypass"
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.request.model"] == "gpt-4o"
    assert request.attributes["gen_ai.response.model"] == FT
    assert request.attributes["http.response.status_code"] == 200
    assert request.status == "unset"
    assert attempt.parent_id == request.span_id
    assert attempt.name == f"chat {FT}"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gen_ai.request.model"] == FT
    assert attempt.attributes["gen_ai.request.max_tokens"] == 50
    assert attempt.attributes["gen_ai.response.model"] == FT
    assert attempt.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attempt.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attempt.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["http.response.status_code"] == 200
    assert request.start_ns <= attempt.start_ns <= attempt.end_ns <= request.end_ns
    seen = lower_keys(simulator_call(request_id)["headers"])
    assert seen["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"
    assert seen["tracestate"] == "acme=1"


def test_a_stream_s_attempt_lasts_until_its_end_and_carries_the_usage(
    traced: openai.OpenAI, receiver: Receiver
) -> None:
    trace_id, _, header = traceparent()
    with traced.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": header},
    ) as stream:
        chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None
    spans = receiver.trace(trace_id, 2)
    [request], [attempt] = only(spans, "server"), only(spans, "client")
    assert request.attributes["turnout.stream"] is True
    assert attempt.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert request.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attempt.end_ns <= request.end_ns
    assert attempt.end_ns - attempt.start_ns > 0


def test_retries_and_fallbacks_are_attempts_and_events(
    traced: openai.OpenAI, receiver: Receiver, simulator_call: SimulatorCalls
) -> None:
    trace_id, _, header = traceparent()
    request_id = new_request_id()
    headers = {
        "x-simulated-fault": "503",
        "x-simulated-fault-for": FT,
        "x-request-id": request_id,
        "traceparent": header,
    }
    raw = traced.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    assert raw.headers["x-turnout-fallback-from"] == "support-ft"
    spans = receiver.trace(trace_id, 4)
    [request], attempts = only(spans, "server"), only(spans, "client")
    assert [span.name for span in attempts] == [f"chat {FT}", f"chat {FT}", "chat gpt-4"]
    assert [span.attributes["turnout.route"] for span in attempts] == ["support-ft", "support-ft", "gpt4"]
    assert [span.status for span in attempts] == ["error", "error", "unset"]
    assert [span.attributes.get("error.type") for span in attempts] == ["503", "503", None]
    assert {span.parent_id for span in attempts} == {request.span_id}
    assert [name for name, _ in request.events] == ["turnout.retry", "turnout.fallback"]
    retry, fallback = (attributes for _, attributes in request.events)
    assert retry == {"turnout.route": "support-ft", "error.type": "server_error"}
    assert fallback == {"turnout.fallback_from": ["support-ft"], "turnout.route": "gpt4", "error.type": "server_error"}
    assert request.attributes["turnout.route"] == "gpt4"
    assert request.attributes["turnout.fallback_from"] == ["support-ft"]
    assert request.attributes["turnout.retries"] == 1
    assert request.attributes["gen_ai.response.model"] == "gpt-4"
    seen = lower_keys(simulator_call(request_id)["headers"])
    assert seen["traceparent"] == f"00-{trace_id}-{attempts[-1].span_id}-01"


def test_a_request_without_a_traceparent_starts_a_trace(traced: openai.OpenAI, receiver: Receiver) -> None:
    request_id = new_request_id()
    traced.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-request-id": request_id})
    spans = receiver.wait_for(lambda spans: any(s.attributes.get("turnout.request_id") == request_id for s in spans))
    [request] = [span for span in spans if span.attributes.get("turnout.request_id") == request_id]
    assert request.parent_id == ""
    assert len([span for span in spans if span.parent_id == request.span_id]) == 1


def test_without_tracing_the_clients_traceparent_passes_through(
    client: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    _, _, header = traceparent()
    request_id = new_request_id()
    client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"traceparent": header, "x-request-id": request_id}
    )
    assert lower_keys(simulator_call(request_id)["headers"])["traceparent"] == header
