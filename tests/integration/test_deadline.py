"""The deadline, the breaker's counting and a failed stream's log line, through the whole app in-process.

The upstream is the simulator: its `timeout` fault never answers, `500` fails, `midstream` breaks a stream off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config.settings import Settings, load_settings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process
from tests.integration.test_policy_routing import CHAT, FT, body, write_policy

# As the shipped default.yaml has it (a 60 s route timeout, 2 retries), with a deadline.
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: sk-policy-test-key-0123456789}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz", timeout: 60}
  gpt4: {upstream: sim, model: gpt-4}
baseline: gpt4
retry: {attempts: 2, backoff: 0.01, max_backoff: 0.02}
circuit_breaker: {failures: 2, cooldown: 60}
deadline: {default: 120, max: 300, fallback_share: 0.5}
rules:
  - name: default
    route: support-ft
    fallback: [gpt4]
"""


@pytest.fixture
async def app(simulator: SimulatorServer, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    policy = tmp_path / "policy.yaml"
    write_policy(policy, POLICY)
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy)}

    def reload() -> Settings:
        return load_settings(env)

    async with in_process(load_settings(env), reload=reload) as http:
        yield http


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == "turnout.access"]


async def test_a_hung_route_is_cut_and_its_fallback_answers(
    app: httpx.AsyncClient, simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    hung = {"x-simulated-fault": "timeout", "x-simulated-fault-for": FT, "x-turnout-timeout": "1"}
    response = await app.post(CHAT, json=body(), headers={"x-request-id": "req-hung", **hung})
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4"
    assert response.headers["x-turnout-fallback-from"] == "support-ft"
    [line] = access_lines(caplog)
    assert line["upstream_errors"] == ["support-ft:timeout"]  # one attempt, cut at its share: no retry
    assert line["retries"] == 0


async def test_with_every_route_hung_the_deadline_is_a_504_timeout(app: httpx.AsyncClient) -> None:
    hung = {"x-simulated-fault": "timeout", "x-turnout-timeout": "0.5"}
    response = await app.post(CHAT, json=body(), headers=hung)
    assert response.status_code == 504
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("timeout_error", "timeout")
    assert response.headers["x-turnout-fallback-from"] == "support-ft"


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
async def test_a_bad_timeout_header_is_a_400(app: httpx.AsyncClient, value: str) -> None:
    response = await app.post(CHAT, json=body(), headers={"x-turnout-timeout": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "x-turnout-timeout",
        "invalid_timeout",
    )


async def test_a_request_and_its_retries_are_one_failure_of_the_breaker(app: httpx.AsyncClient) -> None:
    failing = {"x-simulated-fault": "500", "x-simulated-fault-for": FT}
    first = await app.post(CHAT, json=body(), headers=failing)
    assert first.headers["x-turnout-fallback-from"] == "support-ft"  # 3 attempts: one failed request
    healthy = await app.post(CHAT, json=body())
    assert healthy.headers["x-turnout-route"] == "support-ft"  # not open: 1 of the 2 failures that open it


async def test_a_stream_broken_off_logs_the_status_the_client_saw_and_the_failure(
    app: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    request = body(stream=True)
    async with app.stream("POST", CHAT, json=request, headers={"x-simulated-fault": "midstream"}) as response:
        assert response.status_code == 200
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert '"error"' in text
    [line] = access_lines(caplog)
    assert line["status"] == 200
    assert line["upstream_errors"] == ["support-ft:midstream"]
    failure = line["failure"]
    assert failure["status"] >= 500
    assert failure["type"] == "upstream_error"
    assert "mid-stream" in failure["message"]


async def test_a_whole_stream_logs_no_failure(app: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    async with app.stream("POST", CHAT, json=body(stream=True)) as response:
        assert response.status_code == 200
        await response.aread()
    [line] = access_lines(caplog)
    assert (line["status"], line["failure"]) == (200, None)
