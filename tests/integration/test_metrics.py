"""Cost headers, the stream's cost comment, `/metrics` and the access log, through the whole app in-process."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.cost import PriceTable
from proxy.config.settings import Settings, load_settings
from proxy.logs import LOG_FORMAT, RedactingFormatter
from proxy.wire.schemas import Usage
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process
from tests.integration.test_policy_routing import CHAT, FT, POLICY, body, reload_now, write_policy

CLIENT_KEY = "sk-client-key-that-must-not-leak-42"
PRICES = PriceTable(baseline_model="gpt-4")


def expected_cost(model: str, usage: dict[str, int]) -> tuple[Decimal, Decimal]:
    charge = PRICES.charge(
        model, Usage(prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"])
    )
    assert charge is not None
    return charge.cost, charge.savings


@pytest.fixture
def env(simulator: SimulatorServer, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    write_policy(policy, POLICY)
    return {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy)}


@pytest.fixture
async def app(env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    def reload() -> Settings:
        return load_settings(env)

    async with in_process(load_settings(env), reload=reload) as http:
        yield http


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == "turnout.access"]


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_an_answer_carries_its_cost_and_savings(app: httpx.AsyncClient) -> None:
    response = await app.post(CHAT, json=body())
    cost, savings = expected_cost(FT, response.json()["usage"])
    assert Decimal(response.headers["x-turnout-cost-usd"]) == cost > 0
    assert Decimal(response.headers["x-turnout-savings-usd"]) == savings > 0

    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    response = await app.post(CHAT, json=body(tools=[tool]))
    assert response.headers["x-turnout-route"] == "gpt4"
    assert Decimal(response.headers["x-turnout-cost-usd"]) == expected_cost("gpt-4", response.json()["usage"])[0]
    assert response.headers["x-turnout-savings-usd"] == "0"


async def test_a_fallback_is_priced_by_the_model_that_really_answered(app: httpx.AsyncClient) -> None:
    response = await app.post(CHAT, json=body(), headers={"x-simulated-fault": "500", "x-simulated-fault-for": FT})
    assert response.json()["model"] == "gpt-4"
    assert Decimal(response.headers["x-turnout-cost-usd"]) == expected_cost("gpt-4", response.json()["usage"])[0]


async def test_an_error_costs_nothing(app: httpx.AsyncClient) -> None:
    response = await app.post(CHAT, json=body(), headers={"x-simulated-fault": "500"})
    assert response.status_code == 502
    assert response.headers["x-turnout-cost-usd"] == "0"


async def test_a_stream_ends_with_its_cost_as_sse_comments(app: httpx.AsyncClient) -> None:
    response = await app.post(CHAT, json=body(stream=True, stream_options={"include_usage": True}))
    assert "x-turnout-cost-usd" not in response.headers  # headers left before the usage arrived
    events = response.text.split("\n\n")
    usage = next(
        json.loads(event[6:])["usage"] for event in events if event.startswith("data: {") and '"usage":{' in event
    )
    cost, savings = expected_cost(FT, usage)
    assert events[-3:] == [f": x-turnout-cost-usd: {cost}\n: x-turnout-savings-usd: {savings}", "data: [DONE]", ""]


async def test_metrics_are_served_in_prometheus_format(app: httpx.AsyncClient) -> None:
    await app.post(
        CHAT, json=body(), headers={"x-turnout-caller": "team-unique-caller", "authorization": f"Bearer {CLIENT_KEY}"}
    )
    await app.post(CHAT, json=body(stream=True))
    await app.post(CHAT, json=body(), headers={"x-simulated-fault": "500", "x-simulated-fault-for": FT})
    response = await app.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "team-unique-caller" not in response.text
    assert CLIENT_KEY not in response.text
    samples = metric_samples(response.text)
    ok = {"route": "support-ft", "rule": "default", "model": FT, "status_class": "2xx", "cache": "bypass"}
    ok["endpoint"] = "chat"
    assert samples["turnout_requests_total", frozenset(ok.items())] == 2
    fallback = {**ok, "route": "gpt4", "model": "gpt-4"}
    assert samples["turnout_requests_total", frozenset(fallback.items())] == 1
    assert samples["turnout_fallbacks_total", frozenset({("route", "support-ft")})] == 1
    assert samples["turnout_retries_total", frozenset({("route", "support-ft")})] == 1
    assert (
        samples["turnout_time_to_first_token_seconds_count", frozenset({("route", "support-ft"), ("cache", "bypass")})]
        == 1
    )
    assert samples["turnout_circuit_state", frozenset({("route", "support-ft")})] == 0
    assert samples["turnout_requests_in_flight", frozenset()] == 0


async def test_reloads_are_counted_by_result(app: httpx.AsyncClient, env: dict[str, str]) -> None:
    await reload_now()
    write_policy(
        Path(env["TURNOUT_CONFIG"]), POLICY.replace("route: support-ft\n    fallback", "route: nowhere\n    fallback")
    )
    await reload_now()
    samples = metric_samples((await app.get("/metrics")).text)
    assert samples["turnout_policy_reloads_total", frozenset({("result", "success")})] == 1
    assert samples["turnout_policy_reloads_total", frozenset({("result", "failure")})] == 1


async def test_one_access_log_line_per_request_without_content_or_secrets(
    app: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    headers = {"x-request-id": "req-log-1", "x-turnout-caller": "billing", "authorization": f"Bearer {CLIENT_KEY}"}
    private = "my password is hunter2"
    response = await app.post(CHAT, json=body(messages=[{"role": "user", "content": private}]), headers=headers)
    await app.get("/healthz")
    await app.get("/metrics")
    lines = access_lines(caplog)
    assert len(lines) == 1
    line = lines[0]
    usage = response.json()["usage"]
    assert line["request_id"] == "req-log-1"
    assert (line["caller"], line["route"], line["rule"], line["model"], line["status"]) == (
        "billing",
        "support-ft",
        "default",
        FT,
        200,
    )
    assert (line["cache"], line["prompt_tokens"], line["completion_tokens"]) == (
        "bypass",
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert line["cost_usd"] == response.headers["x-turnout-cost-usd"]
    assert line["savings_usd"] == response.headers["x-turnout-savings-usd"]
    assert isinstance(line["duration_ms"], float)
    assert isinstance(line["upstream_ms"], float)
    assert 0 < line["upstream_ms"] <= line["duration_ms"]
    assert line["messages"] is None
    assert line["answer"] is None
    assert private not in caplog.text
    assert CLIENT_KEY not in caplog.text


async def test_message_content_is_logged_only_when_turned_on(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    async with in_process(load_settings({**env, "TURNOUT_LOG_CONTENT": "true"})) as http:
        response = await http.post(
            CHAT, json=body(messages=[{"role": "user", "content": "What is the refund policy?"}])
        )
    (line,) = access_lines(caplog)
    assert line["messages"] == [{"role": "user", "content": "What is the refund policy?"}]
    assert line["input"] is None
    assert line["answer"] == [response.json()["choices"][0]["message"]["content"]]


CONTENT_CASES = [
    pytest.param(
        "/v1/responses",
        {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "What is the refund policy?"},
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the refund policy?"}],
        None,
        id="responses",
    ),
    pytest.param(
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]},
        [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        None,
        id="responses-items",
    ),
    pytest.param(
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": ["Say this", "Say that"]},
        None,
        ["Say this", "Say that"],
        id="completions",
    ),
    pytest.param(
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": "refund policy"},
        None,
        "refund policy",
        id="embeddings",
    ),
]


def answer_texts(path: str, answer: dict[str, Any]) -> list[str | None] | None:
    """What the answer says, read the way its SDK reads it."""
    if path == "/v1/responses":
        return ["".join(part["text"] for part in item["content"]) for item in answer["output"]]
    if path == "/v1/completions":
        return [choice["text"] for choice in answer["choices"]]
    return None  # an embedding is no text


@pytest.mark.parametrize(("path", "request_body", "messages", "given"), CONTENT_CASES)
async def test_every_routed_kind_logs_its_content_when_turned_on(
    env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    path: str,
    request_body: dict[str, Any],
    messages: list[dict[str, Any]] | None,
    given: object,
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    async with in_process(load_settings({**env, "TURNOUT_LOG_CONTENT": "true"})) as http:
        response = await http.post(path, json=request_body)
        assert response.status_code == 200, response.text
    (line,) = access_lines(caplog)
    assert (line["messages"], line["input"]) == (messages, given)
    assert line["answer"] == answer_texts(path, response.json())


async def test_logged_content_keeps_its_secrets_redacted(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    leaked = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    async with in_process(load_settings({**env, "TURNOUT_LOG_CONTENT": "true"})) as http:
        for path, payload in [
            ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": f"my key is {leaked}"}),
            ("/v1/embeddings", {"model": "text-embedding-3-small", "input": [f"my key is {leaked}"]}),
            ("/v1/responses", {"model": "gpt-4o-mini", "instructions": f"key {leaked}", "input": "Hi"}),
        ]:
            assert (await http.post(path, json=payload)).status_code == 200
    records = [record for record in caplog.records if record.name == "turnout.access"]
    assert len(records) == 3
    for record in records:
        written = RedactingFormatter(LOG_FORMAT).format(record)  # what `turnout serve` writes
        assert leaked not in written
        assert "[redacted]" in written


async def test_the_access_log_can_be_turned_off(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    async with in_process(load_settings({**env, "TURNOUT_ACCESS_LOG": "false"})) as http:
        assert (await http.post(CHAT, json=body())).status_code == 200
    assert access_lines(caplog) == []


async def shadow_tokens(
    app: httpx.AsyncClient, more_than: float
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics once the shadow route's completion tokens exceed `more_than` (the copies run in the background)."""
    key = (
        "turnout_tokens_total",
        frozenset({("route", "gpt4-shadow"), ("model", "gpt-4-shadow"), ("kind", "completion")}),
    )
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for _ in range(200):
        samples = metric_samples((await app.get("/metrics")).text)
        if samples.get(key, 0) > more_than:
            break
        await asyncio.sleep(0.02)
    return samples


async def test_a_shadow_copy_counts_as_spend_on_its_route_not_as_a_request(app: httpx.AsyncClient) -> None:
    shadow = frozenset({("route", "gpt4-shadow"), ("model", "gpt-4-shadow")})
    await app.post(CHAT, json=body(metadata={"shadow": "yes"}))
    samples = await shadow_tokens(app, 0)
    tokens = samples["turnout_tokens_total", shadow | {("kind", "completion")}]
    cost = samples["turnout_cost_usd_total", shadow]
    assert cost > 0  # priced as its family, gpt-4
    await app.post(CHAT, json=body(metadata={"shadow": "yes"}, stream=True))
    samples = await shadow_tokens(app, tokens)  # a streamed copy is priced from its usage chunk
    assert samples["turnout_cost_usd_total", shadow] > cost
    assert ("turnout_baseline_cost_usd_total", shadow) not in samples
    assert not [key for key in samples if key[0] == "turnout_requests_total" and ("route", "gpt4-shadow") in key[1]]
