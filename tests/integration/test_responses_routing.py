"""Responses through a policy: routing, fallbacks, the cache, and the response id → upstream map (issue 13, point 1).

Two simulated upstreams on loopback ports, each holding the responses it made: a request continuing one
(`previous_response_id`), and `GET`/`DELETE`/`input_items`/`cancel`, must reach the one that holds it. With
Redis, two apps share the map, as two replicas do.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config.settings import load_settings
from routes.simulator.server import SimulatorServer, start_simulator
from tests.conftest import in_process, upstream_call
from tests.openapi import validate

POLICY = """
upstreams:
  one: {{base_url: "${{SIM_ONE}}", api_key: sk-one-test-key-0123456789}}
  two: {{base_url: "${{SIM_TWO}}", api_key: sk-two-test-key-0123456789}}
routes:
  first: {{upstream: one, model: gpt-4o}}
  second: {{upstream: two, model: gpt-4o-mini}}
baseline: first
retry: {{attempts: 0}}
cache: {cache}
rules:
  - name: other
    when: {{metadata: {{side: "two"}}}}
    route: second
  - name: one
    when: {{metadata: {{side: "one"}}}}
    route: first
  - name: json
    when: {{response_format: json_schema}}
    route: second
  - name: default
    route: first
    fallback: [second]
"""

App = Callable[[], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def second_simulator() -> AsyncIterator[SimulatorServer]:
    server = await start_simulator()
    yield server
    await server.aclose()


@pytest.fixture(params=["memory", "redis"])
def app(
    request: pytest.FixtureRequest,
    simulator: SimulatorServer,
    second_simulator: SimulatorServer,
    tmp_path: Path,
) -> App:
    if request.param == "memory":
        cache = "{max_bytes: 1000000}"
    else:
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        cache = f'{{url: "{url}", key_prefix: "{prefix}", timeout: 1.0}}'
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY.format(cache=cache)), encoding="utf-8")
    env = {"SIM_ONE": simulator.base_url, "SIM_TWO": second_simulator.base_url, "TURNOUT_CONFIG": str(path)}

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[httpx.AsyncClient]:
        async with in_process(load_settings(env)) as http:
            yield http

    return start


def create(**extra: Any) -> dict[str, Any]:
    return {"model": "anything", "input": "Hello", **extra}


async def test_the_policy_routes_responses_by_their_features(app: App) -> None:
    async with app() as http:
        plain = await http.post("/v1/responses", json=create())
        assert plain.headers["x-turnout-route"] == "first"
        assert plain.json()["model"] == "gpt-4o"
        other = await http.post("/v1/responses", json=create(metadata={"side": "two"}))
        assert (other.headers["x-turnout-route"], other.headers["x-turnout-rule"]) == ("second", "other")
        schema = {"type": "json_schema", "name": "x", "schema": {"type": "object"}}
        formatted = await http.post("/v1/responses", json=create(text={"format": schema}))
        assert formatted.headers["x-turnout-rule"] == "json"


async def test_a_continuation_goes_to_the_upstream_that_holds_the_response(
    app: App, second_simulator: SimulatorServer
) -> None:
    async with app() as http:
        made = (await http.post("/v1/responses", json=create(metadata={"side": "two"}))).json()
        # The policy would send this one to `first` (no fallback), whose upstream does not know the response.
        follow = await http.post(
            "/v1/responses", json=create(previous_response_id=made["id"], metadata={"side": "one"})
        )
        assert follow.status_code == 200, follow.text
        assert follow.headers["x-turnout-route"] == "second"
        assert follow.json()["previous_response_id"] == made["id"]
        again = create(previous_response_id=made["id"], metadata={"side": "one"}, stream=True)
        streamed = await http.post("/v1/responses", json=again)
        assert streamed.headers["x-turnout-route"] == "second"
        assert "response.completed" in streamed.text


async def test_an_unknown_previous_response_is_a_404(app: App) -> None:
    async with app() as http:
        reply = await http.post("/v1/responses", json=create(previous_response_id="resp_unknown"))
        assert reply.status_code == 404, reply.text
        validate("ErrorResponse", reply.json())
        assert reply.json()["error"]["param"] == "previous_response_id"


async def test_bogus_previous_response_ids_never_open_the_circuit_nor_fall_back(
    app: App, second_simulator: SimulatorServer
) -> None:
    """Any client may send ids no upstream holds: that is the caller's 404, never the route's failure.

    Were it counted, `failures` such requests (5) would open `first`'s circuit for every client.
    """
    async with app() as http:
        for attempt in range(12):
            request_id = f"bogus-previous-{attempt}"
            reply = await http.post(
                "/v1/responses",
                json=create(previous_response_id=f"resp_bogus_{attempt}", stream=attempt % 2 == 1),
                headers={"x-request-id": request_id},
            )
            assert reply.status_code == 404, reply.text
            assert reply.json()["error"]["param"] == "previous_response_id"
            assert (reply.headers["x-turnout-route"], reply.headers.get("x-turnout-fallback-from")) == ("first", None)
            with pytest.raises(httpx.HTTPStatusError):  # the fallback was never tried
                await upstream_call(second_simulator, request_id)
        metrics = (await http.get("/metrics")).text
        plain = await http.post("/v1/responses", json=create())
    assert 'turnout_circuit_state{route="first"} 0.0' in metrics
    assert 'turnout_fallbacks_total{route="first"} 0.0' in metrics
    assert 'turnout_upstream_errors_total{route="first"' not in metrics
    assert (plain.status_code, plain.headers["x-turnout-route"]) == (200, "first")
    assert "x-turnout-fallback-from" not in plain.headers


async def test_stored_responses_are_read_deleted_and_listed_where_they_live(app: App) -> None:
    async with app() as http:
        made = (await http.post("/v1/responses", json=create(metadata={"side": "two"}))).json()
        streamed = await http.post("/v1/responses", json=create(metadata={"side": "two"}, stream=True))
        created = streamed.text.split("data: ", 1)[1].split("\n", 1)[0]
        streamed_id = httpx.Response(200, content=created).json()["response"]["id"]
        for response_id in (made["id"], streamed_id):
            got = await http.get(f"/v1/responses/{response_id}")
            assert got.status_code == 200, got.text
            validate("Response", got.json())
        items = await http.get(f"/v1/responses/{made['id']}/input_items", params={"order": "asc", "limit": 1})
        assert items.status_code == 200, items.text
        validate("ResponseItemList", items.json())
        assert len(items.json()["data"]) == 1
        deleted = await http.delete(f"/v1/responses/{made['id']}")
        assert deleted.status_code == 200
        assert deleted.json()["deleted"] is True
        gone = await http.get(f"/v1/responses/{made['id']}")
        assert gone.status_code == 404
        validate("ErrorResponse", gone.json())


async def test_a_background_response_is_cancelled_where_it_runs(app: App) -> None:
    async with app() as http:
        slow = {"x-simulated-latency-ms": "60000"}
        made = await http.post("/v1/responses", json=create(metadata={"side": "two"}, background=True), headers=slow)
        assert made.json()["status"] == "queued"
        cancelled = await http.post(f"/v1/responses/{made.json()['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"


async def test_an_unknown_id_goes_to_the_default_upstream_and_its_404_is_relayed(app: App) -> None:
    async with app() as http:
        reply = await http.get("/v1/responses/resp_nobody")
        assert reply.status_code == 404
        validate("ErrorResponse", reply.json())
        odd = await http.get("/v1/responses/%2E%2E")
        assert odd.status_code == 404
        validate("ErrorResponse", odd.json())


async def test_an_id_a_fallback_answered_lives_on_the_fallbacks_upstream(app: App) -> None:
    async with app() as http:
        failing = {"x-simulated-fault": "500", "x-simulated-fault-for": "gpt-4o"}
        made = await http.post("/v1/responses", json=create(), headers=failing)
        assert made.status_code == 200, made.text
        assert made.headers["x-turnout-fallback-from"] == "first"
        got = await http.get(f"/v1/responses/{made.json()['id']}")
        assert got.status_code == 200


async def test_a_store_false_response_is_not_remembered(app: App) -> None:
    async with app() as http:
        made = (await http.post("/v1/responses", json=create(metadata={"side": "two"}, store=False))).json()
        assert (await http.get(f"/v1/responses/{made['id']}")).status_code == 404


async def test_deterministic_responses_are_cached_in_either_form(app: App, simulator: SimulatorServer) -> None:
    async with app() as http:
        payload = create(temperature=0, input="Cache me")
        first = await http.post("/v1/responses", json=payload)
        second = await http.post("/v1/responses", json=payload)
        assert (first.headers["x-turnout-cache"], second.headers["x-turnout-cache"]) == ("miss", "hit")
        assert second.json()["output"] == first.json()["output"]
        streamed = await http.post("/v1/responses", json={**payload, "stream": True})
        assert streamed.headers["x-turnout-cache"] == "hit"
        assert "event: response.output_text.delta" in streamed.text
        sampled = await http.post("/v1/responses", json=create(input="Cache me"))
        assert sampled.headers["x-turnout-cache"] != "hit"


@pytest.mark.parametrize("app", ["redis"], indirect=True)
async def test_the_map_is_shared_by_two_replicas_when_redis_holds_it(app: App) -> None:
    async with app() as one, app() as other:
        made = (await one.post("/v1/responses", json=create(metadata={"side": "two"}))).json()
        got = await other.get(f"/v1/responses/{made['id']}")
        assert got.status_code == 200, got.text
        follow = await other.post(
            "/v1/responses", json=create(previous_response_id=made["id"], metadata={"side": "one"})
        )
        assert follow.headers["x-turnout-route"] == "second"


async def test_the_upstream_is_called_with_its_own_key(app: App, second_simulator: SimulatorServer) -> None:
    async with app() as http:
        made = await http.post(
            "/v1/responses", json=create(metadata={"side": "two"}), headers={"x-request-id": "resp-key-check"}
        )
        assert made.status_code == 200
    call = await upstream_call(second_simulator, "resp-key-check")
    assert call["headers"]["Authorization"] == "Bearer sk-two-test-key-0123456789"


async def test_a_cached_stream_replays_whole(app: App) -> None:
    async with app() as http:
        payload = create(temperature=0, input="Stream then whole")
        streamed = await http.post("/v1/responses", json={**payload, "stream": True})
        assert streamed.headers["x-turnout-cache"] == "miss"
        whole = await http.post("/v1/responses", json=payload)
        assert whole.headers["x-turnout-cache"] == "hit"
        validate("Response", whole.json())
        assert whole.json()["output"][0]["content"][0]["text"] in streamed.text
