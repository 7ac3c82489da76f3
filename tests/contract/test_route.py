"""Every route kind passes the same tests: what the `Route` protocol promises the pipeline, the cache and accounting.

Each kind is built as a deployment builds it, over the simulated upstream on loopback (the RAG route over
the shipped example index, answering with a plain upstream route), and driven with real calls.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, get_args

import pytest

from proxy.endpoints.chat import CHAT
from proxy.wire.errors import ProxyError
from routes import Call, ChatCall, HybridRetriever, KnowledgeIndex, OpenAIChatRoute, RagRoute, Route, Upstream
from routes.knowledge.embedding import LocalEmbedder, RememberingEmbedder
from routes.registry import AnyRouteSettings
from routes.simulator.server import SimulatorServer, start_simulator
from routes.upstream import UpstreamTimeouts, new_session

INDEX = Path(__file__).resolve().parents[2] / "policies" / "examples" / "knowledge-index"
QUESTION = "How long do refunds take?"


@pytest.fixture(scope="module")
def embedder() -> RememberingEmbedder:
    return RememberingEmbedder(LocalEmbedder())


def plain(upstream: Upstream, _: RememberingEmbedder) -> Route:
    return OpenAIChatRoute("support-ft", upstream, "ft:gpt-4o-mini:acme::support")


def rag(upstream: Upstream, embedder: RememberingEmbedder) -> Route:
    retriever = HybridRetriever(KnowledgeIndex.load(INDEX), embedder)
    return RagRoute("docs", retriever, OpenAIChatRoute("support-ft", upstream, "ft:gpt-4o-mini:acme::support"))


KINDS: dict[str, Callable[[Upstream, RememberingEmbedder], Route]] = {"openai": plain, "rag": rag}


def test_every_registered_kind_is_here() -> None:
    assert {str(settings.__struct_config__.tag) for settings in get_args(AnyRouteSettings)} == set(KINDS)


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    server = await start_simulator()
    yield server
    await server.aclose()


@pytest.fixture(params=sorted(KINDS))
async def route(request: pytest.FixtureRequest, simulator: SimulatorServer, embedder: RememberingEmbedder) -> Any:
    session = new_session(UpstreamTimeouts(connect=2, read=0.5, total=10))  # "timeout" waits for the read one
    try:
        yield KINDS[request.param](Upstream("sim", simulator.base_url, "sk-test", session), embedder)
    finally:
        await session.close()


def call(*, stream: bool = False, fault: str | None = None, question: str = QUESTION) -> ChatCall:
    body = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": question}]}
    headers = {"x-request-id": "req-contract"} | ({"x-simulated-fault": fault} if fault else {})
    return Call(endpoint=CHAT, body=CHAT.decode(json.dumps(body).encode()), headers=headers)


async def test_it_says_what_the_pipeline_and_the_cache_key_on(route: Route) -> None:
    assert route.name
    assert route.model is None or isinstance(route.model, str)
    assert isinstance(route.cache_scope, str)
    assert "chat" in route.endpoints


async def test_an_answer_reads_as_its_endpoints_and_names_its_model_and_usage(route: Route) -> None:
    answer = await route.complete(call())
    model, usage = CHAT.read_answer(answer.body)
    assert (answer.model, answer.usage) == (model, usage)
    assert answer.model == "ft:gpt-4o-mini:acme::support"  # the route's model, not the caller's
    assert usage is not None
    assert usage.total_tokens > 0
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in answer.headers)


async def test_a_stream_is_whole_events_ending_with_the_end_event_and_reports_its_usage(route: Route) -> None:
    opened = await route.stream(call(stream=True))
    items = [item async for item in opened.events]
    assert items
    assert all(item and item.endswith(b"\n\n") for item in items)
    joined = b"".join(items)
    assert CHAT.ends(joined)
    cut = CHAT.cut(joined)
    assert (cut.ended, cut.unreadable, cut.error) == (True, None, None)
    found = CHAT.take_usage(joined, keep=False)
    assert found.usage is not None  # asked of the upstream whatever the caller asked
    assert found.model == "ft:gpt-4o-mini:acme::support"


async def test_its_headers_are_the_same_streamed_or_not(route: Route) -> None:
    answer = await route.complete(call())
    opened = await route.stream(call(stream=True))
    with contextlib.suppress(StopAsyncIteration):
        await opened.events.aclose()
    assert [name for name, _ in answer.headers] == [name for name, _ in opened.headers]


async def test_the_call_is_left_as_it_came(route: Route) -> None:
    asked = call()
    raw, headers = asked.raw, dict(asked.headers)
    await route.complete(asked)
    assert (asked.raw, dict(asked.headers)) == (raw, headers)


@pytest.mark.parametrize("fault", ["500", "429", "timeout"])
async def test_an_upstream_failure_is_a_proxy_error_before_the_answer(route: Route, fault: str) -> None:
    with pytest.raises(ProxyError) as failed:
        await route.complete(call(fault=fault))
    assert failed.value.route_failure


async def test_a_stream_that_breaks_raises_after_its_first_events(route: Route) -> None:
    events = (await route.stream(call(stream=True, fault="midstream"))).events
    assert await anext(events)  # the first events come before the error
    with pytest.raises(ProxyError):
        await drain(events)


async def drain(events: AsyncIterator[bytes]) -> None:
    async for _ in events:
        pass
