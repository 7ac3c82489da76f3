"""Every route kind of the registry, built from a policy file by the real lifespan, keeps the `Route` contract.

Each kind has a case here (a test fails when a kind is registered without one): its entry in a policy file,
and what its route must say it is (`model`, `cache_scope`, `endpoints`). Each route then answers the
simulated upstream in both modes, and the app lists it and answers through it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest

from proxy.config.settings import load_settings
from proxy.endpoints.chat import CHAT
from proxy.endpoints.responses import RESPONSES, ResponsesRequest
from proxy.lifespan import open_resources
from proxy.wire.sse import DONE_EVENT
from routes import Call, ChatCall, KnowledgeIndex, Route
from routes.knowledge.embedding import LocalEmbedder
from routes.knowledge.indexer import add_files
from routes.registry import AnyRouteSettings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process


@dataclass(frozen=True)
class Case:
    entry: str
    """The route `r`'s entry in the policy file (beside `ft: {upstream: sim, model: ft}`)."""
    model: str | None
    scope: Callable[[str], str]
    """The `cache_scope` this kind's route must have, given the version of the knowledge index beside the file."""
    listed: list[str]
    """The routes as `/readyz` and `/v1/models` list them (the file says `r`, then `ft`)."""
    endpoints: frozenset[str]
    """The endpoint kinds the route serves (given its entry)."""


CASES = {
    "openai": Case(
        "{upstream: sim, model: gpt-4, timeout: 30, endpoints: [chat, responses, embeddings]}",
        "gpt-4",
        lambda version: "",
        ["r", "ft"],
        frozenset({"chat", "responses", "embeddings"}),
    ),
    "rag": Case(
        "{kind: rag, index: ./index, answer_with: ft, top_k: 2}",
        "ft",  # the model of the route it answers with
        lambda version: f"{version}/top_k=2/min_score=0.0/tokens=1500",
        ["ft", "r"],  # after the routes that answer themselves
        frozenset({"chat", "responses"}),
    ),
}


def policy(entry: str) -> str:
    return (
        'upstreams:\n  sim: {base_url: "${SIM_URL}"}\n'
        f"routes:\n  r: {entry}\n  ft: {{upstream: sim, model: ft}}\n"
        "rules:\n  - name: default\n    route: r\n"
    )


def test_every_registered_kind_has_a_case() -> None:
    kinds = {str(settings.__struct_config__.tag) for settings in get_args(AnyRouteSettings)}
    assert kinds == set(CASES)


@pytest.fixture(params=sorted(CASES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def loaded(kind: str, simulator: SimulatorServer, folder: Path) -> AsyncIterator[tuple[dict[str, str], str]]:
    """The environment that loads a policy file whose route `r` is of `kind`, and the version of the index beside it."""
    (folder / "hours.txt").write_text("Support is open from 8 to 18 on weekdays.", encoding="utf-8")
    embedder = LocalEmbedder(256)
    index, _ = await add_files(
        KnowledgeIndex.empty(folder / "index", embedder.name, 256), [folder / "hours.txt"], embedder
    )
    index.save()
    path = folder / "policy.yaml"
    path.write_text(policy(CASES[kind].entry), encoding="utf-8")
    yield {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path)}, index.version


def call(stream: bool = False) -> ChatCall:
    body = {"model": "caller-model", "messages": [{"role": "user", "content": "When is support open?"}]}
    return Call(endpoint=CHAT, body=CHAT.decode(json.dumps({**body, "stream": stream}).encode()), headers={})


def responses_call(stream: bool = False) -> Call[ResponsesRequest]:
    body = {"model": "caller-model", "input": "When is support open?", "stream": stream}
    return Call(endpoint=RESPONSES, body=RESPONSES.decode(json.dumps(body).encode()), headers={})


async def test_the_route_says_what_it_is_and_answers_both_ways(
    kind: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    async with loaded(kind, simulator, tmp_path) as (env, version), open_resources(load_settings(env)) as resources:
        route: Route = resources.current.pipeline.routes["r"]
        assert route.name == "r"
        assert route.model == CASES[kind].model
        assert route.cache_scope == CASES[kind].scope(version)
        assert route.endpoints == CASES[kind].endpoints

        completion = await route.complete(call())
        assert json.loads(completion.body)["object"] == "chat.completion"
        assert completion.usage is not None

        items = [item async for item in (await route.stream(call(stream=True))).events]
        assert items
        assert all(item.endswith(b"\n\n") for item in items)
        assert items[-1].endswith(DONE_EVENT)

        response = await route.complete(responses_call())
        assert json.loads(response.body)["object"] == "response"
        assert response.usage is not None
        events = b"".join([item async for item in (await route.stream(responses_call(stream=True))).events])
        assert RESPONSES.cut(events).ended
        assert RESPONSES.take_usage(events, keep=True).usage is not None


async def test_the_app_lists_the_route_and_answers_through_it(
    kind: str, simulator: SimulatorServer, tmp_path: Path
) -> None:
    async with loaded(kind, simulator, tmp_path) as (env, _), in_process(load_settings(env)) as http:
        ready = await http.get("/readyz")
        assert ready.json()["routes"] == CASES[kind].listed
        models = await http.get("/v1/models")
        listed = [model["id"] for model in models.json()["data"]]
        assert listed[: len(ready.json()["routes"])] == ready.json()["routes"]  # then the upstream's own models
        body = {"model": "anything", "messages": [{"role": "user", "content": "When is support open?"}]}
        answer = await http.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200
        assert answer.headers["x-turnout-route"] == "r"
        assert answer.json()["choices"][0]["message"]["content"]
