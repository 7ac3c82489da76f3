"""A `nearest` rule served by the real `turnout serve`: the official SDK's requests reach the closest route's
model, and a message close to none of them falls through to the default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  billing-ft: {upstream: sim, model: "ft:billing"}
  shipping-ft: {upstream: sim, model: "ft:shipping"}
  gpt4: {upstream: sim, model: gpt-4}
rules:
  - name: intents
    nearest:
      routes:
        billing-ft: ["Why was I charged twice?", "I want a refund", "My payment was declined"]
        shipping-ft: ["Where is my package?", "How long does delivery take?", "How do I track my order?"]
  - name: default
    route: gpt4
"""


@pytest.fixture(scope="module")
def routed(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    policy = Path(tmp_path_factory.mktemp("nearest")) / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    with running(start_turnout(env)) as process:
        client = sdk_client(process.origin)
        yield client
        client.close()


@pytest.mark.parametrize(
    ("message", "route", "rule", "model"),
    [
        ("please refund my last payment", "billing-ft", "intents", "ft:billing"),
        ("where is my package? I want to track it", "shipping-ft", "intents", "ft:shipping"),
        ("Write me a short poem about the sea.", "gpt4", "default", "gpt-4"),
    ],
)
def test_the_closest_route_answers_and_none_of_these_falls_through(
    routed: openai.OpenAI, simulator_call: SimulatorCalls, message: str, route: str, rule: str, model: str
) -> None:
    request_id = new_request_id()
    raw = routed.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": message}], extra_headers={"x-request-id": request_id}
    )
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rule"]) == (route, rule)
    assert simulator_call(request_id)["body"]["model"] == model
