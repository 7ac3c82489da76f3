"""One deadline per request, through the real server and the official SDK, with the simulator's faults.

The policy is the shipped default's shape (a 60 s route timeout, 2 retries, a fallback) and the upstream
read timeout is a minute, so that only the deadline can cut the simulator's hung route short.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import (
    CLIENT_KEY,
    RunningProcess,
    SimulatorCalls,
    new_request_id,
    running,
    start_turnout,
    turnout_env,
)

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz", timeout: 60}
  gpt4: {upstream: sim, model: gpt-4}
baseline: gpt4
retry: {attempts: 2, backoff: 0.25, max_backoff: 8}
deadline: {default: 120, max: 300, fallback_share: 0.5}
rules:
  - name: default
    route: support-ft
    fallback: [gpt4]
"""
MESSAGES: list[Any] = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture(scope="module")
def deadlined(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    policy = Path(tmp_path_factory.mktemp("policy")) / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(
        simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1", TURNOUT_UPSTREAM_READ_TIMEOUT="60"
    )
    with (
        running(start_turnout(env)) as process,
        openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{process.origin}/v1", max_retries=0, timeout=30) as client,
    ):
        yield client


def test_a_hung_route_is_cut_and_the_fallback_answers_within_the_deadline(
    deadlined: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    request_id = new_request_id()
    headers = {
        "x-request-id": request_id,
        "x-simulated-fault": "timeout",
        "x-simulated-fault-for": FT,
        "x-turnout-timeout": "2",
    }
    raw = deadlined.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    assert raw.http_response.status_code == 200
    assert raw.parse().model == "gpt-4"
    assert raw.headers["x-turnout-fallback-from"] == "support-ft"
    record = simulator_call(request_id)
    assert record["models"] == [FT, "gpt-4"]  # the hung route was tried once, not retried past its share


def test_a_hung_stream_falls_back_within_the_deadline(deadlined: openai.OpenAI) -> None:
    headers = {"x-simulated-fault": "timeout", "x-simulated-fault-for": FT, "x-turnout-timeout": "2"}
    with deadlined.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers
    ) as stream:
        chunks = list(stream)
    assert {chunk.model for chunk in chunks} == {"gpt-4"}


def test_when_every_route_hangs_the_deadline_is_a_504_timeout(deadlined: openai.OpenAI) -> None:
    headers = {"x-simulated-fault": "timeout", "x-turnout-timeout": "1"}
    with pytest.raises(openai.InternalServerError) as caught:
        deadlined.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    assert caught.value.status_code == 504
    body = caught.value.response.json()
    assert (body["error"]["type"], body["error"]["code"]) == ("timeout_error", "timeout")


def test_a_nonsense_timeout_is_a_400(deadlined: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        deadlined.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-turnout-timeout": "forever"}
        )
    assert caught.value.response.json()["error"]["param"] == "x-turnout-timeout"
