"""Embeddings and legacy completions in the whole app: which route answers them, the cache, cost, bad input."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config.settings import load_settings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process, make_settings, upstream_call
from tests.openapi import validate

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: sk-policy-test-key-0123456789}
  other: {base_url: "${SIM_URL}", api_key: sk-policy-test-key-0123456789}
routes:
  gpt4: {upstream: sim, model: gpt-4}
  embed: {upstream: other, model: text-embedding-3-small, endpoints: [embeddings]}
  instruct: {upstream: other, model: gpt-3.5-turbo-instruct, endpoints: [completions, chat]}
aliases: {vectors: embed}
baseline: gpt4
rules:
  - name: default
    route: gpt4
"""


@pytest.fixture
async def routed(simulator: SimulatorServer, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    async with in_process(load_settings({"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path)})) as http:
        yield http


@pytest.fixture
async def unrouted(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(make_settings(simulator.base_url)) as http:
        yield http


def embedding(**extra: Any) -> dict[str, Any]:
    return {"model": "text-embedding-3-small", "input": "When is support open?", **extra}


def completion(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "temperature": 0, **extra}


async def test_a_route_serving_embeddings_for_the_model_answers_them(routed: httpx.AsyncClient) -> None:
    answer = await routed.post("/v1/embeddings", json=embedding())
    assert answer.status_code == 200, answer.text
    assert (answer.headers["x-turnout-route"], answer.headers["x-turnout-rule"]) == ("embed", "model")
    validate("CreateEmbeddingResponse", answer.json())
    assert float(answer.headers["x-turnout-cost-usd"]) > 0
    assert answer.headers["x-turnout-savings-usd"] == "0"  # the baseline serves no embeddings: nothing to compare


async def test_a_route_named_by_model_or_alias_answers_with_its_own_model(
    routed: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    answer = await routed.post("/v1/embeddings", json=embedding(model="vectors"), headers={"x-request-id": "emb-a"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-turnout-route"] == "embed"
    assert (await upstream_call(simulator, "emb-a"))["body"]["model"] == "text-embedding-3-small"


async def test_without_a_route_for_the_model_the_default_upstream_answers_with_the_callers_model(
    routed: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    asked = embedding(model="text-embedding-3-large")
    answer = await routed.post("/v1/embeddings", json=asked, headers={"x-request-id": "emb-b"})
    assert answer.status_code == 200, answer.text
    assert (answer.headers["x-turnout-route"], answer.headers["x-turnout-rule"]) == ("sim", "default")
    call = await upstream_call(simulator, "emb-b")
    assert call["body"]["model"] == "text-embedding-3-large"
    assert call["headers"]["Authorization"] == "Bearer sk-policy-test-key-0123456789"
    listed = (await routed.get("/readyz")).json()["routes"]
    assert listed == ["gpt4", "embed", "instruct"]  # the default upstream's route is not a configured one
    models = [model["id"] for model in (await routed.get("/v1/models")).json()["data"]]
    assert "sim" not in models


async def test_a_named_route_that_serves_no_embeddings_is_a_400(routed: httpx.AsyncClient) -> None:
    answer = await routed.post("/v1/embeddings", json=embedding(model="gpt4"))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unsupported_endpoint"


async def test_completions_go_to_the_route_serving_them_and_never_by_the_rules(routed: httpx.AsyncClient) -> None:
    answer = await routed.post("/v1/completions", json=completion())
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-turnout-route"] == "instruct"
    validate("CreateCompletionResponse", answer.json())
    chat = {"model": "gpt-3.5-turbo-instruct", "messages": [{"role": "user", "content": "Hi"}]}
    assert (await routed.post("/v1/chat/completions", json=chat)).headers["x-turnout-route"] == "gpt4"  # the rules


async def test_without_a_policy_every_kind_goes_to_the_one_upstream(unrouted: httpx.AsyncClient) -> None:
    for path, asked in (("/v1/embeddings", embedding()), ("/v1/completions", completion())):
        answer = await unrouted.post(path, json=asked)
        assert answer.status_code == 200, answer.text
        assert (answer.headers["x-turnout-route"], answer.headers["x-turnout-rule"]) == ("openai", "default")
    assert (await unrouted.get("/readyz")).json()["routes"] == ["openai"]


async def test_embeddings_are_cached_by_input_dimensions_and_encoding(unrouted: httpx.AsyncClient) -> None:
    first = await unrouted.post("/v1/embeddings", json=embedding(dimensions=8))
    again = await unrouted.post("/v1/embeddings", json=embedding(dimensions=8))
    assert (first.headers["x-turnout-cache"], again.headers["x-turnout-cache"]) == ("miss", "hit")
    assert again.content == first.content
    assert again.headers["x-turnout-cost-usd"] == "0"
    for changed in (embedding(dimensions=16), embedding(dimensions=8, encoding_format="base64"), embedding(input="x")):
        assert (await unrouted.post("/v1/embeddings", json=changed)).headers["x-turnout-cache"] == "miss"


async def test_a_completion_is_cached_and_replays_as_a_stream(unrouted: httpx.AsyncClient) -> None:
    first = await unrouted.post("/v1/completions", json=completion())
    streamed = await unrouted.post("/v1/completions", json=completion(stream=True))
    assert (first.headers["x-turnout-cache"], streamed.headers["x-turnout-cache"]) == ("miss", "hit")
    assert streamed.text.endswith("data: [DONE]\n\n")
    text = first.json()["choices"][0]["text"]
    assert text
    assert text.split()[0] in streamed.text
    sampled = completion(temperature=0.9)
    assert (await unrouted.post("/v1/completions", json=sampled)).headers["x-turnout-cache"] == "bypass"


@pytest.mark.parametrize(
    ("path", "asked", "param"),
    [
        ("/v1/embeddings", embedding(input=""), "input"),
        ("/v1/embeddings", embedding(input=[1, "a"]), "input"),
        ("/v1/embeddings", embedding(input=[[1], []]), "input"),
        ("/v1/embeddings", embedding(dimensions=0), "dimensions"),
        ("/v1/embeddings", embedding(encoding_format="int8"), "encoding_format"),
        ("/v1/embeddings", {"input": "x"}, "model"),
        ("/v1/completions", completion(prompt=[[1], "a"]), "prompt"),
        ("/v1/completions", completion(n=0), "n"),
        ("/v1/completions", completion(logprobs=6), "logprobs"),
        ("/v1/completions", completion(n=3, best_of=2), "best_of"),
        ("/v1/completions", completion(stream="yes"), "stream"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(
    unrouted: httpx.AsyncClient, path: str, asked: dict[str, Any], param: str
) -> None:
    answer = await unrouted.post(path, json=asked)
    assert answer.status_code == 400, answer.text
    validate("ErrorResponse", answer.json())
    assert answer.json()["error"]["param"] == param


async def test_the_default_upstreams_route_never_takes_a_policy_routes_name(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    named_like_it = 'upstreams:\n  sim: {base_url: "${SIM_URL}"}\nroutes:\n  sim: {upstream: sim, model: gpt-4}\n'
    path.write_text(named_like_it + "rules:\n  - name: default\n    route: sim\n", encoding="utf-8")
    async with in_process(load_settings({"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path)})) as http:
        answer = await http.post("/v1/embeddings", json=embedding())
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-turnout-route"] == "sim-default"
        assert (await http.get("/readyz")).json()["routes"] == ["sim"]


async def test_upstream_faults_reach_the_client_as_for_chat(unrouted: httpx.AsyncClient) -> None:
    limited = await unrouted.post("/v1/embeddings", json=embedding(), headers={"x-simulated-fault": "429"})
    assert limited.status_code == 429
    assert limited.headers["retry-after"]
    validate("ErrorResponse", limited.json())
    broken = await unrouted.post(
        "/v1/completions", json=completion(stream=True, temperature=1), headers={"x-simulated-fault": "midstream"}
    )
    assert broken.status_code == 200  # the stream had begun
    events = [line for line in broken.text.split("\n\n") if line.startswith("data: ")]
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "upstream_error"
    assert events[-1] == "data: [DONE]"
