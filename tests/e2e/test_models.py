"""`models.list()` and `models.retrieve()` through the real server with a policy, as the official SDK sees them.

The policy has two upstreams: the simulator, and one where nothing listens (its connection is refused). The list holds
the routes and aliases, then the simulator's models; the dead upstream costs its models, never the request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import RunningProcess, free_port, running, sdk_client, start_turnout, turnout_env
from tests.openapi import validate

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
  dead: {base_url: "${DEAD_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt-4: {upstream: sim, model: gpt-4}
  offline: {upstream: dead, model: gpt-4}
aliases: {support: support-ft}
rules:
  - name: default
    route: support-ft
"""
ROUTES = ["support-ft", "gpt-4", "offline", "support"]
SIMULATED = [  # the simulator's models but gpt-4, which is a route here
    "gpt-4.1",
    "gpt-4.1-mini",
    "ft:gpt-4.1-mini-2025-04-14:acme::8Xyz",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo",
    "ft:gpt-3.5-turbo-0613:acme::8Xyz",
]


@pytest.fixture(scope="module")
def routed(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    policy = Path(tmp_path_factory.mktemp("models")) / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1", DEAD_URL=dead)
    with running(start_turnout(env)) as process:
        client = sdk_client(process.origin)
        yield client
        client.close()


def test_the_list_holds_the_routes_the_aliases_and_the_upstreams_models(routed: openai.OpenAI) -> None:
    raw = routed.models.with_raw_response.list()
    body = json.loads(raw.http_response.text)
    validate("ListModelsResponse", body)
    for model in body["data"]:
        validate("Model", model)
    assert [model.id for model in raw.parse()] == [*ROUTES, *SIMULATED]
    assert {model.owned_by for model in raw.parse() if model.id in ROUTES} == {"turnout"}


def test_retrieve_a_route_an_alias_and_an_upstream_model(routed: openai.OpenAI) -> None:
    for model_id in ("support", "gpt-4"):
        raw = routed.models.with_raw_response.retrieve(model_id)
        validate("Model", json.loads(raw.http_response.text))
        assert (raw.parse().id, raw.parse().owned_by) == (model_id, "turnout")
    upstream = routed.models.with_raw_response.retrieve("ft:gpt-3.5-turbo-0613:acme::8Xyz")
    # The upstream's own object, as it sent it.
    assert json.loads(upstream.http_response.text) == {
        "id": "ft:gpt-3.5-turbo-0613:acme::8Xyz",
        "object": "model",
        "created": 1686935002,
        "owned_by": "openai",
    }


def test_an_unknown_model_is_not_found(routed: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        routed.models.retrieve("gpt-does-not-exist")
    assert caught.value.status_code == 404
    validate("ErrorResponse", caught.value.response.json())
    assert caught.value.code == "not_found"


async def test_the_async_sdk_sees_the_same_list(routed: openai.OpenAI) -> None:
    async with openai.AsyncOpenAI(
        api_key=routed.api_key, base_url=routed.base_url, max_retries=0, _strict_response_validation=True
    ) as client:
        ids = [model.id async for model in client.models.list()]
        assert ids == [*ROUTES, *SIMULATED]
        assert (await client.models.retrieve("gpt-4o")).owned_by == "openai"
