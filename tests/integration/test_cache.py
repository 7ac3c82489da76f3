"""The response cache in the whole app, on both backends: hits, misses, bypasses, streams, single flight."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from proxy.config.settings import Settings, load_settings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process
from tests.openapi import validate

CHAT = "/v1/chat/completions"

POLICY = """
upstreams:
  sim: {{base_url: "${{SIM_URL}}", api_key: sk-cache-test-key-0123456789}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
  ft: {{upstream: sim, model: ft-model}}
cache: {cache}
rules:
  - name: uncached
    when: {{metadata: {{cache: "off"}}}}
    route: gpt4
    cache: off
  - name: any-temperature
    when: {{metadata: {{cache: "all"}}}}
    route: gpt4
    cache: {{deterministic_only: false, ttl: 60}}
  - name: read-only
    when: {{metadata: {{cache: "read"}}}}
    route: gpt4
    cache: read
  - name: short
    when: {{metadata: {{cache: "short"}}}}
    route: gpt4
    cache: {{ttl: 0.2}}
  - name: fine-tuned
    when: {{metadata: {{route: "ft"}}}}
    route: ft
  - name: with-fallback
    when: {{metadata: {{route: "ft-or-gpt4"}}}}
    route: ft
    fallback: [gpt4]
  - name: default
    route: gpt4
"""


def body(content: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}


def unique(content: str = "Hello") -> str:
    """Message text no other test sends, so that tests sharing a Redis never see each other's answers."""
    return f"{content} {uuid.uuid4().hex[:8]}"


async def reached_upstream(simulator: SimulatorServer, request_id: str) -> bool:
    base = simulator.base_url.removesuffix("/v1")
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/_simulator/calls/{request_id}")
    return response.status_code == 200


def cache_block(backend: str, redis_url: str, prefix: str) -> str:
    if backend == "memory":
        return "{max_bytes: 1000000}"
    return f'{{url: "{redis_url}", key_prefix: "{prefix}", timeout: 1.0}}'


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_factory(simulator: SimulatorServer, tmp_path: Path, redis_url: str, redis_prefix: str) -> AppFactory:
    """`async with app_factory(backend) as http`: the app with that cache backend (apps of one test share Redis)."""

    @contextlib.asynccontextmanager
    async def start(backend: str, policy: str = POLICY, name: str = "policy.yaml") -> AsyncIterator[httpx.AsyncClient]:
        path = tmp_path / name
        path.write_text(textwrap.dedent(policy.format(cache=cache_block(backend, redis_url, redis_prefix))))
        env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path)}
        settings: Settings = load_settings(env)
        async with in_process(settings) as http:
            yield http

    return start


@pytest.fixture(params=["memory", "redis"])
async def cached(request: pytest.FixtureRequest, app_factory: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with app_factory(request.param) as http:
        yield http


async def ask(http: httpx.AsyncClient, payload: dict[str, Any], **headers: str) -> httpx.Response:
    request_id = headers.pop("request_id", None) or f"req-{uuid.uuid4().hex}"
    response = await http.post(CHAT, json=payload, headers={"x-request-id": request_id, **headers})
    response.extensions["request_id"] = request_id
    return response


def sse_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [msgspec.json.decode(p) for p in payloads[:-1]]


# --- exact match ---------------------------------------------------------------------------------------------


async def test_a_repeated_question_is_answered_from_the_cache_without_an_upstream_call(
    cached: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    payload = body(unique())
    first = await ask(cached, payload)
    second = await ask(cached, payload)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-turnout-cache"] == "miss"
    assert second.headers["x-turnout-cache"] == "hit"
    assert second.headers["x-turnout-route"] == "gpt4"
    assert second.content == first.content
    validate("CreateChatCompletionResponse", second.json())
    assert await reached_upstream(simulator, first.extensions["request_id"])
    assert not await reached_upstream(simulator, second.extensions["request_id"])


async def test_a_request_that_is_not_deterministic_bypasses_the_cache(cached: httpx.AsyncClient) -> None:
    payload = body(unique())
    del payload["temperature"]
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "bypass"
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "bypass"
    seeded = {**payload, "seed": 7}
    assert (await ask(cached, seeded)).headers["x-turnout-cache"] == "miss"
    assert (await ask(cached, seeded)).headers["x-turnout-cache"] == "hit"


async def test_no_cache_skips_the_read_and_no_store_the_write(cached: httpx.AsyncClient) -> None:
    payload = body(unique())
    assert (await ask(cached, payload, **{"cache-control": "no-store"})).headers["x-turnout-cache"] == "miss"
    assert (await ask(cached, payload, **{"cache-control": "no-cache"})).headers["x-turnout-cache"] == "bypass"
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "hit"  # the no-cache answer was stored
    both = {"cache-control": "no-cache, no-store"}
    assert (await ask(cached, payload, **both)).headers["x-turnout-cache"] == "bypass"


async def test_tenants_keys_routes_and_parameters_never_share_answers(cached: httpx.AsyncClient) -> None:
    payload = body(unique())
    assert (await ask(cached, payload, **{"x-turnout-caller": "acme"})).headers["x-turnout-cache"] == "miss"
    assert (await ask(cached, payload, **{"x-turnout-caller": "globex"})).headers["x-turnout-cache"] == "miss"
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "miss"  # no caller: a tenant of its own
    assert (await ask(cached, payload, **{"x-turnout-caller": "acme"})).headers["x-turnout-cache"] == "hit"
    as_key = {"authorization": "Bearer sk-client-one-0123456789"}
    assert (await ask(cached, payload, **as_key)).headers["x-turnout-cache"] == "miss"
    assert (await ask(cached, payload, authorization="Bearer sk-client-two-0123456789")).headers[
        "x-turnout-cache"
    ] == "miss"
    assert (await ask(cached, payload, **as_key)).headers["x-turnout-cache"] == "hit"
    other_route = {**payload, "metadata": {"route": "ft"}}
    assert (await ask(cached, other_route)).headers["x-turnout-cache"] == "miss"
    assert (await ask(cached, {**payload, "max_tokens": 5})).headers["x-turnout-cache"] == "miss"


async def test_rules_turn_the_cache_off_or_widen_it(cached: httpx.AsyncClient) -> None:
    off = body(unique(), metadata={"cache": "off"})
    assert [(await ask(cached, off)).headers["x-turnout-cache"] for _ in range(2)] == ["bypass", "bypass"]
    loose = body(unique(), metadata={"cache": "all"})
    del loose["temperature"]
    assert [(await ask(cached, loose)).headers["x-turnout-cache"] for _ in range(2)] == ["miss", "hit"]
    read_only = body(unique(), metadata={"cache": "read"})
    assert [(await ask(cached, read_only)).headers["x-turnout-cache"] for _ in range(2)] == ["miss", "miss"]


async def test_an_answer_expires_after_its_rules_ttl(cached: httpx.AsyncClient) -> None:
    payload = body(unique(), metadata={"cache": "short"})
    assert [(await ask(cached, payload)).headers["x-turnout-cache"] for _ in range(2)] == ["miss", "hit"]
    await asyncio.sleep(0.3)
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "miss"


async def test_errors_are_never_stored(cached: httpx.AsyncClient) -> None:
    payload = body(unique())
    failed = await ask(cached, payload, **{"x-simulated-fault": "500"})
    assert failed.status_code == 502
    assert failed.headers["x-turnout-cache"] == "miss"
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "miss"


async def test_a_fallbacks_answer_is_not_stored_under_the_decided_route(cached: httpx.AsyncClient) -> None:
    payload = body(unique(), metadata={"route": "ft-or-gpt4"})
    fault = {"x-simulated-fault": "500", "x-simulated-fault-for": "ft-model"}
    for stream in (False, True):
        fallen = await ask(cached, {**payload, "stream": stream}, **fault)
        assert fallen.status_code == 200
        assert fallen.headers["x-turnout-fallback-from"] == "ft"
        assert fallen.headers["x-turnout-cache"] == "miss"
    answered = await ask(cached, payload)
    assert answered.headers["x-turnout-route"] == "ft"
    assert answered.headers["x-turnout-cache"] == "miss"
    assert answered.json()["model"] == "ft-model"


# --- streams -------------------------------------------------------------------------------------------------


async def test_a_completed_stream_is_stored_and_replays_in_either_form(
    cached: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    payload = body(unique(), stream=True)
    live = await ask(cached, payload)
    assert live.headers["x-turnout-cache"] == "miss"
    live_chunks = sse_chunks(live)

    replayed = await ask(cached, payload)
    assert replayed.headers["x-turnout-cache"] == "hit"
    assert replayed.headers["content-type"].startswith("text/event-stream")
    assert not await reached_upstream(simulator, replayed.extensions["request_id"])
    chunks = sse_chunks(replayed)
    assert chunks == live_chunks  # the same chunk structure, the usage chunk left out as live
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)

    with_usage = sse_chunks(await ask(cached, {**payload, "stream_options": {"include_usage": True}}))
    assert with_usage[-1]["choices"] == []
    assert with_usage[-1]["usage"]["total_tokens"] > 0
    for chunk in with_usage:
        validate("CreateChatCompletionStreamResponse", chunk)

    assembled = await ask(cached, {**payload, "stream": False})
    assert assembled.headers["x-turnout-cache"] == "hit"
    completion = assembled.json()
    validate("CreateChatCompletionResponse", completion)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in live_chunks if c["choices"])
    assert completion["choices"][0]["message"]["content"] == text
    assert completion["id"] == live_chunks[0]["id"]


async def test_a_completion_replays_as_a_stream(cached: httpx.AsyncClient) -> None:
    payload = body(unique())
    completion = (await ask(cached, payload)).json()
    replayed = await ask(cached, {**payload, "stream": True, "stream_options": {"include_usage": True}})
    assert replayed.headers["x-turnout-cache"] == "hit"
    chunks = sse_chunks(replayed)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == completion["usage"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == completion["choices"][0]["message"]["content"]


async def test_a_stream_cut_off_by_an_error_is_not_stored(cached: httpx.AsyncClient) -> None:
    payload = body(unique(), stream=True)
    broken = await ask(cached, payload, **{"x-simulated-fault": "midstream"})
    assert '"error"' in broken.text
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "miss"


async def test_a_dropped_upstream_connection_is_not_stored(cached: httpx.AsyncClient) -> None:
    payload = body(unique(), stream=True)
    await ask(cached, payload, **{"x-simulated-fault": "disconnect"})
    assert (await ask(cached, payload)).headers["x-turnout-cache"] == "miss"


# --- single flight -------------------------------------------------------------------------------------------


async def test_concurrent_identical_misses_make_one_upstream_call(
    cached: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    payload = body(unique())
    ids = [f"req-flight-{uuid.uuid4().hex}" for _ in range(8)]
    slow = {"x-simulated-latency-ms": "200"}
    responses = await asyncio.gather(*(ask(cached, payload, request_id=i, **slow) for i in ids))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses}) == 1
    assert sorted(r.headers["x-turnout-cache"] for r in responses) == ["hit"] * 7 + ["miss"]
    reached = [await reached_upstream(simulator, i) for i in ids]
    assert reached.count(True) == 1


async def test_waiters_call_the_upstream_themselves_when_the_first_fails(
    cached: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    payload = body(unique())
    leader_id = f"req-leader-{uuid.uuid4().hex}"
    leader = asyncio.ensure_future(
        ask(cached, payload, request_id=leader_id, **{"x-simulated-fault": "500", "x-simulated-latency-ms": "200"})
    )
    async with asyncio.timeout(5):  # a hang guard: the leader is on its way to the upstream, its flight open
        while not await reached_upstream(simulator, leader_id):  # noqa: ASYNC110 - the simulator signals nothing
            await asyncio.sleep(0.005)
    follower = await ask(cached, payload)
    assert (await leader).status_code == 502
    assert follower.status_code == 200
    assert await reached_upstream(simulator, follower.extensions["request_id"])


async def test_replicas_sharing_redis_make_one_upstream_call(
    app_factory: AppFactory, simulator: SimulatorServer
) -> None:
    payload = body(unique())
    slow = {"x-simulated-latency-ms": "300"}
    async with app_factory("redis", name="a.yaml") as one, app_factory("redis", name="b.yaml") as two:
        ids = [f"req-replica-{uuid.uuid4().hex}" for _ in range(6)]
        apps = [one, two] * 3
        responses = await asyncio.gather(
            *(ask(app, payload, request_id=i, **slow) for app, i in zip(apps, ids, strict=True))
        )
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses}) == 1
    reached = [await reached_upstream(simulator, i) for i in ids]
    assert reached.count(True) == 1


async def test_a_reload_keeps_the_cache_unless_its_block_changes(simulator: SimulatorServer, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY.format(cache="{max_bytes: 1000000}")))
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path)}
    async with in_process(load_settings(env), reload=lambda: load_settings(env)) as http:
        payload = body(unique())
        assert [(await ask(http, payload)).headers["x-turnout-cache"] for _ in range(2)] == ["miss", "hit"]
        path.write_text(
            textwrap.dedent(POLICY.format(cache="{max_bytes: 1000000}").replace("- name: default", "- name: rest"))
        )
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        again = await ask(http, payload)
        assert (again.headers["x-turnout-rule"], again.headers["x-turnout-cache"]) == ("rest", "hit")
        path.write_text(textwrap.dedent(POLICY.format(cache="{max_bytes: 2000000}")))
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        assert (await ask(http, payload)).headers["x-turnout-cache"] == "miss"
