"""Policy files in the whole app: decisions, headers, fallbacks, breakers, shadows, models, reloads."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config.settings import Settings, load_settings
from proxy.lifespan import open_resources
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process, upstream_call
from tests.openapi import validate

CHAT = "/v1/chat/completions"
FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: sk-policy-test-key-0123456789}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt4: {upstream: sim, model: gpt-4}
  gpt4-shadow: {upstream: sim, model: gpt-4-shadow}
aliases: {fast: support-ft}
baseline: gpt4
retry: {attempts: 1, backoff: 0.01, max_backoff: 0.02}
circuit_breaker: {failures: 4, cooldown: 60}
rules:
  - name: tools
    when: {has_tools: true}
    route: gpt4
  - name: shadowed
    when: {metadata: {shadow: "yes"}}
    route: support-ft
    shadow: {route: gpt4-shadow, sample: 1.0}
  - name: canary
    when: {metadata: {canary: "yes"}}
    split: {support-ft: 50, gpt4: 50}
    sticky: user
  - name: default
    route: support-ft
    fallback: [gpt4]
"""


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], **extra}


def write_policy(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    write_policy(path, POLICY)
    return path


@pytest.fixture
async def routed(simulator: SimulatorServer, policy_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy_file)}

    def reload() -> Settings:
        return load_settings(env)

    async with in_process(load_settings(env), reload=reload) as http:
        yield http


async def test_the_rule_decides_and_the_routes_model_answers(
    routed: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    response = await routed.post(CHAT, json=body(), headers={"x-request-id": "req-rule"})
    assert response.headers["x-turnout-route"] == "support-ft"
    assert response.headers["x-turnout-rule"] == "default"
    assert "x-turnout-fallback-from" not in response.headers
    assert response.json()["model"] == FT  # the model that really answered
    call = await upstream_call(simulator, "req-rule")
    assert call["body"]["model"] == FT
    assert call["headers"]["Authorization"] == "Bearer sk-policy-test-key-0123456789"

    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    response = await routed.post(CHAT, json=body(tools=[tool]))
    assert (response.headers["x-turnout-route"], response.headers["x-turnout-rule"]) == ("gpt4", "tools")


async def test_a_failing_route_falls_back_and_says_so(routed: httpx.AsyncClient, simulator: SimulatorServer) -> None:
    headers = {"x-simulated-fault": "500", "x-simulated-fault-for": FT, "x-request-id": "req-fallback"}
    response = await routed.post(CHAT, json=body(), headers=headers)
    assert response.status_code == 200
    assert response.headers["x-turnout-route"] == "gpt4"
    assert response.headers["x-turnout-fallback-from"] == "support-ft"
    assert response.json()["model"] == "gpt-4"
    assert (await upstream_call(simulator, "req-fallback"))["models"] == [FT, FT, "gpt-4"]  # one retry, then gpt4


async def test_a_stream_falls_back_before_its_first_byte(routed: httpx.AsyncClient) -> None:
    headers = {"x-simulated-fault": "503", "x-simulated-fault-for": FT}
    response = await routed.post(CHAT, json=body(stream=True), headers=headers)
    assert response.status_code == 200
    assert response.headers["x-turnout-fallback-from"] == "support-ft"
    assert response.text.endswith("data: [DONE]\n\n")


async def test_the_callers_400_is_never_retried_elsewhere(
    routed: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    headers = {"x-simulated-fault": "400", "x-simulated-fault-for": FT, "x-request-id": "req-400"}
    response = await routed.post(CHAT, json=body(), headers=headers)
    assert response.status_code == 400
    assert (await upstream_call(simulator, "req-400"))["models"] == [FT]


async def test_the_breaker_keeps_requests_off_a_failing_route(
    routed: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    fault = {"x-simulated-fault": "500", "x-simulated-fault-for": FT}
    for attempt in range(4):  # four failed requests open the circuit (two tries each, one failure each)
        await routed.post(CHAT, json=body(), headers={**fault, "x-request-id": f"req-breaker-{attempt}"})
    response = await routed.post(CHAT, json=body(), headers={"x-request-id": "req-breaker-open"})
    assert response.headers["x-turnout-route"] == "gpt4"
    assert response.headers["x-turnout-fallback-from"] == "support-ft"
    assert (await upstream_call(simulator, "req-breaker-open"))["models"] == ["gpt-4"]  # support-ft not tried


async def test_clients_can_pick_a_route_or_alias_as_their_model(
    routed: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    for model, route in (("gpt4", "gpt4"), ("fast", "support-ft")):
        response = await routed.post(CHAT, json={**body(), "model": model})
        assert (response.headers["x-turnout-route"], response.headers["x-turnout-rule"]) == (route, "model")
    models = (await routed.get("/v1/models")).json()
    validate("ListModelsResponse", models)
    # The routes and aliases, then the simulated upstream's own models (tests/integration/test_models.py).
    assert [m["id"] for m in models["data"]][:5] == ["support-ft", "gpt4", "gpt4-shadow", "fast", "gpt-4.1"]
    validate("Model", (await routed.get("/v1/models/fast")).json())
    assert (await routed.get("/v1/models/gpt-does-not-exist")).status_code == 404


async def test_a_shadow_copy_goes_to_its_route_in_the_background(
    routed: httpx.AsyncClient, simulator: SimulatorServer
) -> None:
    response = await routed.post(CHAT, json=body(metadata={"shadow": "yes"}), headers={"x-request-id": "req-sh"})
    assert response.json()["model"] == FT
    for _ in range(100):
        try:
            shadow = await upstream_call(simulator, "req-sh-shadow")
            break
        except httpx.HTTPStatusError:
            await asyncio.sleep(0.02)
    else:
        pytest.fail("the shadow request never reached the upstream")
    assert shadow["body"]["model"] == "gpt-4-shadow"


async def test_a_split_is_sticky_per_user(routed: httpx.AsyncClient) -> None:
    seen: dict[str, set[str]] = {}
    for round_ in range(3):
        for user in ("ana", "ben", "cho", "dev", "eva", "fay"):
            response = await routed.post(CHAT, json=body(user=user, metadata={"canary": "yes"}))
            seen.setdefault(user, set()).add(response.headers["x-turnout-route"])
        assert round_ < 3
    assert all(len(routes) == 1 for routes in seen.values())
    assert {route for routes in seen.values() for route in routes} == {"support-ft", "gpt4"}


async def reload_now() -> None:
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.05)


async def test_sighup_reloads_and_a_broken_file_keeps_the_running_policy(
    routed: httpx.AsyncClient, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_policy(policy_file, POLICY.replace("route: support-ft\n    fallback: [gpt4]", "route: gpt4"))
    await reload_now()
    assert (await routed.post(CHAT, json=body())).headers["x-turnout-route"] == "gpt4"

    write_policy(policy_file, POLICY.replace("route: support-ft\n    fallback", "route: nowhere\n    fallback"))
    await reload_now()
    assert "policy reload failed, keeping the running policy" in caplog.text
    assert "unknown route 'nowhere'" in caplog.text
    assert (await routed.post(CHAT, json=body())).headers["x-turnout-route"] == "gpt4"


async def test_no_request_fails_while_the_policy_is_swapped_repeatedly(
    routed: httpx.AsyncClient, policy_file: Path
) -> None:
    variants = [POLICY, POLICY.replace("route: support-ft\n    fallback: [gpt4]", "route: gpt4")]
    stop = asyncio.Event()
    statuses: list[int] = []

    async def load() -> None:
        while not stop.is_set():
            statuses.append((await routed.post(CHAT, json=body(stream=len(statuses) % 2 == 0))).status_code)

    workers = [asyncio.ensure_future(load()) for _ in range(8)]
    for swap in range(20):
        write_policy(policy_file, variants[swap % 2])
        await reload_now()
    stop.set()
    await asyncio.gather(*workers)
    assert len(statuses) > 40
    assert set(statuses) == {200}


async def test_a_changed_file_is_picked_up_without_a_signal(simulator: SimulatorServer, policy_file: Path) -> None:
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy_file)}
    settings = load_settings(env)
    async with open_resources(settings, reload_settings=lambda: load_settings(env), watch_interval=0.02) as resources:
        assert resources.current.pipeline.policy is not None
        assert resources.current.pipeline.policy.rules[-1] == "default"
        write_policy(policy_file, POLICY.replace("name: default", "name: everything-else"))
        for _ in range(250):
            if resources.reloads:
                break
            await asyncio.sleep(0.02)
        assert resources.reloads == 1
        assert resources.current.pipeline.policy.rules[-1] == "everything-else"


async def test_a_routes_own_timeout_applies(simulator: SimulatorServer, policy_file: Path) -> None:
    write_policy(
        policy_file,
        POLICY.replace(
            'model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}', 'model: "ft:gpt-3.5-turbo-0613:acme::8Xyz", timeout: 0.3}'
        ),
    )
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy_file)}
    async with in_process(load_settings(env)) as http:
        slow = {"x-simulated-latency-ms": "1000", "x-request-id": "req-route-timeout"}
        response = await http.post(CHAT, json=body(), headers=slow)
    assert response.headers["x-turnout-route"] == "gpt4"  # support-ft gave up after 0.3 s; gpt4 has no limit
    assert response.headers["x-turnout-fallback-from"] == "support-ft"
    assert (await upstream_call(simulator, "req-route-timeout"))["models"] == [FT, FT, "gpt-4"]


async def test_the_shadows_outcome_is_logged(
    routed: httpx.AsyncClient, simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.pipeline")
    headers = {"x-simulated-fault": "500", "x-simulated-fault-for": "gpt-4-shadow", "x-request-id": "req-shlog"}
    response = await routed.post(CHAT, json=body(metadata={"shadow": "yes"}), headers=headers)
    assert response.status_code == 200
    for _ in range(100):
        if "shadow req-shlog-shadow to route gpt4-shadow failed with 502" in caplog.text:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"no shadow outcome logged: {caplog.text}")


async def test_an_error_after_the_decision_shows_it_too(routed: httpx.AsyncClient) -> None:
    response = await routed.post(CHAT, json=body(), headers={"x-simulated-fault": "500"})
    assert response.status_code == 502
    assert response.headers["x-turnout-route"] == "gpt4"
    assert response.headers["x-turnout-rule"] == "default"
    assert response.headers["x-turnout-fallback-from"] == "support-ft"
    rejected = await routed.post(CHAT, json=body(), headers={"x-simulated-fault": "400"})
    assert rejected.status_code == 400
    assert (rejected.headers["x-turnout-route"], rejected.headers["x-turnout-rule"]) == ("support-ft", "default")
