"""The usage corpus through the real `turnout serve`: every hand-computed cost in the headers, the stream's closing
comments, the access log and the metrics; the baseline as the counterfactual; shadows and cut streams as spend.

The simulated upstream reports each entry's usage object as given (`x-simulated-usage`), so Turnout prices
exactly what OpenAI would have billed. The policy sends every request to a route without a model of its own
(the caller's model answers), with `gpt4` as the baseline.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.cost import PriceTable
from proxy.wire.schemas import Usage
from tests.corpus import CORPUS, Entry
from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_env,
)
from tests.e2e.test_chat import wait_for_log_line

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  any: {upstream: sim, endpoints: [chat, responses, embeddings, completions]}
  gpt4: {upstream: sim, model: gpt-4}
baseline: gpt4
rules:
  - name: shadowed
    when: {header: {x-cost-case: shadow}}
    route: any
    shadow: {route: gpt4, sample: 1.0}
  - name: default
    route: any
"""
THROUGH_PROXY = [entry for entry in CORPUS if entry.endpoint != "batch"]
BATCHES = [entry for entry in CORPUS if entry.endpoint == "batch"]
STREAMED = [entry for entry in THROUGH_PROXY if entry.endpoint != "embeddings"]
TABLE = PriceTable(baseline_model="gpt-4")


@pytest.fixture(scope="module")
def served(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    policy = Path(tmp_path_factory.mktemp("cost")) / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    with running(start_turnout(env)) as process:
        yield process


@pytest.fixture(scope="module")
def sdk(served: RunningProcess) -> Iterator[openai.OpenAI]:
    with sdk_client(served.origin) as client:
        yield client


def headers_for(entry: Entry, request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id, "x-simulated-usage": json.dumps(entry.usage)}


def tier_of(entry: Entry) -> dict[str, Any]:
    return {"service_tier": entry.service_tier} if entry.service_tier else {}


def question() -> str:
    """A question no earlier request asked (so no answer comes from the response cache)."""
    return f"What does request {uuid.uuid4().hex[:8]} cost?"


def send_whole(sdk: openai.OpenAI, entry: Entry, request_id: str) -> httpx.Headers:
    """The entry's request, not streamed, through the SDK; the response's headers."""
    extra = {"extra_headers": headers_for(entry, request_id), **tier_of(entry)}
    text = question()
    if entry.endpoint == "chat":
        raw: Any = sdk.chat.completions.with_raw_response.create(
            model=entry.model, messages=[{"role": "user", "content": text}], **extra
        )
    elif entry.endpoint == "responses":
        raw = sdk.responses.with_raw_response.create(model=entry.model, input=text, **extra)
    elif entry.endpoint == "embeddings":
        raw = sdk.embeddings.with_raw_response.create(model=entry.model, input=text, encoding_format="float", **extra)
    else:
        raw = sdk.completions.with_raw_response.create(model=entry.model, prompt=text, **extra)
    raw.parse()  # strict validation: the reported usage is a valid one of its endpoint
    headers: httpx.Headers = raw.headers
    return headers


def send_streamed(sdk: openai.OpenAI, entry: Entry, request_id: str) -> list[str]:
    """The entry's request, streamed, through the SDK; the stream's lines."""
    extra = {"extra_headers": headers_for(entry, request_id), **tier_of(entry)}
    text = question()
    if entry.endpoint == "chat":
        opened: Any = sdk.chat.completions.with_streaming_response.create(
            model=entry.model, messages=[{"role": "user", "content": text}], stream=True, **extra
        )
    elif entry.endpoint == "responses":
        opened = sdk.responses.with_streaming_response.create(model=entry.model, input=text, stream=True, **extra)
    else:
        opened = sdk.completions.with_streaming_response.create(model=entry.model, prompt=text, stream=True, **extra)
    with opened as response:
        return [line for line in response.iter_lines() if line]


def comments(lines: list[str]) -> dict[str, str]:
    """The `: name: value` comments that end a stream."""
    found = {}
    for line in lines:
        if line.startswith(": "):
            name, _, value = line[2:].partition(": ")
            found[name] = value
    return found


def check_log(served: RunningProcess, entry: Entry, request_id: str) -> dict[str, Any]:
    line = wait_for_log_line(served, request_id)
    assert Decimal(line["cost_usd"]) == entry.cost, line
    baseline, savings = Decimal(line["baseline_cost_usd"]), Decimal(line["savings_usd"])
    assert savings == baseline - entry.cost
    if entry.baseline_gpt4 is not None:
        assert baseline == entry.baseline_gpt4
    if entry.endpoint in ("embeddings", "completions"):
        assert baseline == entry.cost  # the baseline route serves no such request: its own baseline
    assert line["cost_estimated"] is False
    return line


@pytest.mark.parametrize("entry", THROUGH_PROXY, ids=lambda entry: entry.id)
def test_a_whole_answer_carries_its_hand_computed_cost(
    served: RunningProcess, sdk: openai.OpenAI, entry: Entry
) -> None:
    request_id = new_request_id()
    headers = send_whole(sdk, entry, request_id)
    assert Decimal(headers["x-turnout-cost-usd"]) == entry.cost
    line = check_log(served, entry, request_id)
    assert Decimal(headers["x-turnout-savings-usd"]) == Decimal(line["savings_usd"])
    assert "x-turnout-cost-estimated" not in headers


@pytest.mark.parametrize("entry", STREAMED, ids=lambda entry: entry.id)
def test_a_stream_ends_with_its_hand_computed_cost(served: RunningProcess, sdk: openai.OpenAI, entry: Entry) -> None:
    request_id = new_request_id()
    found = comments(send_streamed(sdk, entry, request_id))
    assert Decimal(found["x-turnout-cost-usd"]) == entry.cost
    line = check_log(served, entry, request_id)
    assert Decimal(found["x-turnout-savings-usd"]) == Decimal(line["savings_usd"])
    assert "x-turnout-cost-estimated" not in found


def samples(origin: str, name: str) -> dict[tuple[str, str], float]:
    """`name`'s samples on Turnout's `/metrics`, by (route, model)."""
    text = httpx.get(f"{origin}/metrics", timeout=5.0).text
    return {
        (found.labels.get("route", ""), found.labels.get("model", "")): float(found.value)
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name
    }


def total(origin: str, name: str) -> float:
    return sum(samples(origin, name).values())


def test_the_metrics_add_up_to_the_bill_and_savings_are_baseline_minus_cost(
    served: RunningProcess, sdk: openai.OpenAI
) -> None:
    names = {
        "cost": "turnout_cost_usd_total",
        "baseline": "turnout_baseline_cost_usd_total",
        "savings": "turnout_savings_usd_total",
        "overspend": "turnout_overspend_usd_total",
    }
    before = {key: total(served.origin, name) for key, name in names.items()}
    billed = Decimal(0)
    for entry in THROUGH_PROXY:
        request_id = new_request_id()
        send_whole(sdk, entry, request_id)
        wait_for_log_line(served, request_id)  # recorded (the line is written after the metrics)
        billed += entry.cost
    after = {key: total(served.origin, name) for key, name in names.items()}
    spent = {key: after[key] - before[key] for key in names}
    assert math.isclose(spent["cost"], float(billed), rel_tol=1e-9)
    assert math.isclose(spent["savings"] - spent["overspend"], spent["baseline"] - spent["cost"], abs_tol=1e-9)


def test_a_shadow_copy_is_spend_without_a_baseline(
    served: RunningProcess, sdk: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    entry = next(entry for entry in CORPUS if entry.id == "chat-gpt-4o-mini-cached")
    before = samples(served.origin, "turnout_overspend_usd_total").get(("gpt4", "gpt-4"), 0.0)
    cost_before = samples(served.origin, "turnout_cost_usd_total").get(("gpt4", "gpt-4"), 0.0)
    request_id = new_request_id()
    headers = {**headers_for(entry, request_id), "x-cost-case": "shadow"}
    raw = sdk.chat.completions.with_raw_response.create(
        model=entry.model, messages=[{"role": "user", "content": question()}], extra_headers=headers
    )
    assert Decimal(raw.headers["x-turnout-cost-usd"]) == entry.cost  # the answer's bill: the shadow is not in it
    assert simulator_call.wait_for(f"{request_id}-shadow", lambda call: call.get("outcome") == "completed")
    shadow_cost = TABLE.cost("gpt-4", entry.as_usage())  # the copy went to gpt-4 and reported the same usage
    assert shadow_cost == Decimal("0.050700")  # (1536*30 + 77*60) / 1e6: gpt-4 has no cached rate

    deadline = time.monotonic() + 5.0  # the copy is recorded when its task ends, after its answer
    while time.monotonic() < deadline:
        cost = samples(served.origin, "turnout_cost_usd_total").get(("gpt4", "gpt-4"), 0.0)
        if math.isclose(cost - cost_before, float(shadow_cost), rel_tol=1e-9):
            break
        time.sleep(0.05)
    overspend = samples(served.origin, "turnout_overspend_usd_total").get(("gpt4", "gpt-4"), 0.0)
    assert math.isclose(overspend - before, float(shadow_cost), rel_tol=1e-9)
    names = ("turnout_cost_usd_total", "turnout_baseline_cost_usd_total")
    cost, baseline = (total(served.origin, name) for name in names)
    net = total(served.origin, "turnout_savings_usd_total") - total(served.origin, "turnout_overspend_usd_total")
    assert math.isclose(net, baseline - cost, abs_tol=1e-9)


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
def test_a_stream_the_client_cuts_off_is_priced_from_an_estimate_and_says_so(
    served: RunningProcess, sdk: openai.OpenAI, simulator_call: SimulatorCalls, endpoint: str
) -> None:
    request_id = new_request_id()
    before = total(served.origin, "turnout_cost_estimated_usd_total")
    slow = {"x-request-id": request_id, "x-simulated-chunks": "100", "x-simulated-chunk-interval-ms": "50"}
    if endpoint == "chat":
        stream: Any = sdk.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": question()}], stream=True, extra_headers=slow
        )
    else:
        stream = sdk.responses.create(model="gpt-4", input=question(), stream=True, extra_headers=slow)
    next(stream)
    next(stream)
    stream.close()
    assert simulator_call.wait_for(request_id, lambda call: call["outcome"] == "cancelled")
    line = wait_for_log_line(served, request_id)
    assert line["status"] == 200
    assert line["cost_estimated"] is True
    # The client's prompt as estimated, and the events relayed (about a token each) before it left.
    assert 0 < line["completion_tokens"] < 100
    prompt, completion = line["prompt_tokens"], line["completion_tokens"]
    expected = TABLE.cost("gpt-4", Usage(prompt_tokens=prompt, completion_tokens=completion))
    assert Decimal(line["cost_usd"]) == expected
    assert Decimal(line["savings_usd"]) == 0  # gpt-4 answered: its own baseline
    estimated = total(served.origin, "turnout_cost_estimated_usd_total") - before
    assert math.isclose(estimated, float(expected), rel_tol=1e-9)


def test_a_stream_that_breaks_off_ends_with_its_estimated_cost(served: RunningProcess, sdk: openai.OpenAI) -> None:
    request_id = new_request_id()
    with sdk.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question()}],
        stream=True,
        extra_headers={"x-request-id": request_id, "x-simulated-fault": "midstream"},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    found = comments(lines)
    assert found["x-turnout-cost-estimated"] == "true"
    line = wait_for_log_line(served, request_id)
    assert Decimal(found["x-turnout-cost-usd"]) == Decimal(line["cost_usd"]) > 0
    assert line["cost_estimated"] is True


def test_the_price_data_in_force_is_a_metric(served: RunningProcess) -> None:
    text = httpx.get(f"{served.origin}/metrics", timeout=5.0).text
    info = [line for line in text.splitlines() if line.startswith("turnout_price_data_info{")]
    assert info == ['turnout_price_data_info{version="2026-12-03"} 1.0']


def batch_usage(entry: Entry) -> dict[str, Any]:
    """The entry's usage as a batch object reports it (the Responses API's names)."""
    usage = entry.as_usage()
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


@pytest.mark.parametrize("entry", BATCHES, ids=lambda entry: entry.id)
def test_a_batch_is_charged_once_at_the_batch_rates(served: RunningProcess, sdk: openai.OpenAI, entry: Entry) -> None:
    embeds = entry.model.startswith("text-embedding")
    url, body = (
        ("/v1/embeddings", {"model": entry.model, "input": question()})
        if embeds
        else ("/v1/chat/completions", {"model": entry.model, "messages": [{"role": "user", "content": question()}]})
    )
    line = {"custom_id": "req-0", "method": "POST", "url": url, "body": body}
    uploaded = sdk.files.create(file=("batch.jsonl", json.dumps(line).encode() + b"\n"), purpose="batch")
    costs = samples(served.origin, "turnout_cost_usd_total")
    created_id = new_request_id()
    created = sdk.batches.with_raw_response.create(
        input_file_id=uploaded.id,
        endpoint=url,  # type: ignore[arg-type]
        completion_window="24h",
        extra_headers={
            "x-request-id": created_id,
            "x-simulated-step-ms": "200",
            "x-simulated-usage": json.dumps(batch_usage(entry)),
        },
    )
    batch = created.parse()
    assert batch.status == "validating"
    assert "x-turnout-cost-usd" not in created.headers  # nothing to bill yet
    deadline = time.monotonic() + 10.0
    while True:
        request_id = new_request_id()
        raw = sdk.batches.with_raw_response.retrieve(batch.id, extra_headers={"x-request-id": request_id})
        if raw.parse().status == "completed" or time.monotonic() > deadline:
            break
        assert "x-turnout-cost-usd" not in raw.headers
        time.sleep(0.1)
    assert raw.parse().status == "completed"
    assert Decimal(raw.headers["x-turnout-cost-usd"]) == entry.cost  # the corpus's hand computation, batch rates
    assert Decimal(raw.headers["x-turnout-savings-usd"]) == 0  # the client's own request: its own baseline
    logged = wait_for_log_line(served, request_id)
    assert Decimal(logged["cost_usd"]) == entry.cost
    assert logged["model"] == entry.model
    assert Decimal(logged["savings_usd"]) == 0
    again_id = new_request_id()
    again = sdk.batches.with_raw_response.retrieve(batch.id, extra_headers={"x-request-id": again_id})
    assert "x-turnout-cost-usd" not in again.headers  # charged once
    assert wait_for_log_line(served, again_id)["cost_usd"] is None
    label = TABLE.label(entry.model)
    added = samples(served.origin, "turnout_cost_usd_total")[("passthrough", label)] - costs.get(
        ("passthrough", label), 0.0
    )
    assert math.isclose(added, float(entry.cost), rel_tol=1e-9)
