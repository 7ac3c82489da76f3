"""`GET /v1/models` with a policy: the routes and aliases, then every upstream's models, fetched in the background.

The catalog is driven on a `ManualClock` against real upstreams on loopback: the simulator, and a small upstream of
the test's own whose list and health the test changes (a fake only at the upstream boundary). The app's own
answers are checked against OpenAI's `ListModelsResponse`, `Model` and `ErrorResponse`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from proxy.config.settings import Settings, load_settings
from proxy.lifespan import open_resources
from proxy.models import FIRST_WAIT, INTERVAL, ModelCatalog
from routes import Upstream, UpstreamTimeouts, new_session
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process
from tests.manual_clock import ManualClock
from tests.openapi import validate

SIMULATED = [
    "gpt-4.1",
    "gpt-4.1-mini",
    "ft:gpt-4.1-mini-2025-04-14:acme::8Xyz",
    "gpt-4",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo",
    "ft:gpt-3.5-turbo-0613:acme::8Xyz",
]
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: sk-models-test-key-0123456789}
  own: {base_url: "${OWN_URL}", api_key: sk-models-own-key-0123456789}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt-4: {upstream: sim, model: gpt-4}
  local: {upstream: own, model: llama-3}
aliases: {fast: support-ft}
rules:
  - name: default
    route: support-ft
"""
ROUTES = ["support-ft", "gpt-4", "local", "fast"]


class OwnUpstream:
    """An OpenAI-compatible upstream whose `GET /v1/models` the test controls: its ids, a failure, a hang."""

    def __init__(self) -> None:
        self.ids = ["llama-3", "mistral-7b"]
        self.status = 200
        self.hang = False
        self.calls = 0
        self.released = asyncio.Event()
        self.asked = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def models(self, _: web.Request) -> web.Response:
        self.calls += 1
        self.asked.set()
        if self.hang:
            await self.released.wait()
        if self.status != 200:
            return web.json_response({"error": {"message": "down", "type": "server_error"}}, status=self.status)
        # No `created` and no `owned_by`, as some OpenAI-compatible servers answer.
        return web.json_response({"object": "list", "data": [{"id": i, "object": "model"} for i in self.ids]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def aclose(self) -> None:
        self.released.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def own() -> AsyncIterator[OwnUpstream]:
    upstream = OwnUpstream()
    await upstream.start()
    yield upstream
    await upstream.aclose()


@pytest.fixture
def settings(simulator: SimulatorServer, own: OwnUpstream, tmp_path: Path) -> Settings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    return load_settings({"SIM_URL": simulator.base_url, "OWN_URL": own.base_url, "TURNOUT_CONFIG": str(policy)})


@pytest.fixture
async def upstreams(settings: Settings) -> AsyncIterator[dict[str, Upstream]]:
    session = new_session(UpstreamTimeouts(connect=2, read=10, total=20))
    built = {
        name: Upstream(name, upstream.base_url, upstream.api_key.reveal() if upstream.api_key else None, session)
        for name, upstream in settings.upstreams.items()
    }
    yield built
    await session.close()


@pytest.fixture
async def catalog(
    settings: Settings, upstreams: dict[str, Upstream]
) -> AsyncIterator[tuple[ModelCatalog, ManualClock]]:
    clock = ManualClock()
    models = ModelCatalog(clock=clock)
    models.follow(settings.deployment, upstreams)
    models.start()
    yield models, clock
    await models.aclose()


def ids(listing: list[bytes]) -> list[str]:
    return [httpx.Response(200, content=model).json()["id"] for model in listing]


async def listed(models: ModelCatalog) -> list[str]:
    """The ids listed once the round in flight has ended (the fetches are real requests on loopback)."""
    return ids(await models.listing())


async def test_routes_and_aliases_come_first_then_each_upstreams_models_once(
    catalog: tuple[ModelCatalog, ManualClock],
) -> None:
    models, _ = catalog
    listing = await models.listing()
    # `gpt-4` is a route and a simulated model: listed once, as the route.
    assert ids(listing) == [*ROUTES, *[m for m in SIMULATED if m != "gpt-4"], "llama-3", "mistral-7b"]
    validate("ListModelsResponse", {"object": "list", "data": [httpx.Response(200, content=m).json() for m in listing]})
    route = httpx.Response(200, content=await models.get("gpt-4") or b"").json()
    assert route["owned_by"] == "turnout"
    assert route["created"] > 0
    simulated = httpx.Response(200, content=await models.get("gpt-4o") or b"").json()
    assert simulated == {"id": "gpt-4o", "object": "model", "created": 1686935002, "owned_by": "openai"}
    filled = httpx.Response(200, content=await models.get("llama-3") or b"").json()
    assert filled == {"id": "llama-3", "object": "model", "created": 0, "owned_by": "own"}  # OpenAI's required fields
    assert await models.get("no-such-model") is None


async def test_the_lists_are_fetched_again_on_the_interval(
    catalog: tuple[ModelCatalog, ManualClock], own: OwnUpstream
) -> None:
    models, clock = catalog
    assert "mistral-7b" in await listed(models)
    own.ids = ["llama-3", "qwen-2"]
    await clock.advance(INTERVAL - 1)
    assert own.calls == 1
    assert "qwen-2" not in await listed(models)  # not yet: the list is kept between two rounds
    await clock.advance(1)
    await _round_done(models, 2)
    assert await listed(models) == [*ROUTES, *[m for m in SIMULATED if m != "gpt-4"], "llama-3", "qwen-2"]
    assert await models.get("mistral-7b") is None


async def test_an_upstream_that_fails_keeps_its_last_list_and_fails_no_request(
    catalog: tuple[ModelCatalog, ManualClock], own: OwnUpstream
) -> None:
    models, clock = catalog
    before = await listed(models)
    own.status = 503
    await clock.advance(INTERVAL)
    await _round_done(models, 2)
    assert await listed(models) == before
    assert await models.get("llama-3") is not None
    own.status, own.ids = 200, ["llama-3"]
    await clock.advance(INTERVAL)
    await _round_done(models, 3)
    assert "mistral-7b" not in await listed(models)  # back, and its new list replaces the kept one


async def test_an_upstream_that_never_answered_leaves_the_others_listed(
    settings: Settings, upstreams: dict[str, Upstream], own: OwnUpstream
) -> None:
    await own.aclose()  # nothing listens there any more: the connection is refused
    clock = ManualClock()
    models = ModelCatalog(clock=clock)
    models.follow(settings.deployment, upstreams)
    models.start()
    try:
        assert await listed(models) == [*ROUTES, *[m for m in SIMULATED if m != "gpt-4"]]
    finally:
        await models.aclose()


async def test_the_first_listing_waits_for_a_slow_upstream_only_so_long(
    settings: Settings, upstreams: dict[str, Upstream], own: OwnUpstream
) -> None:
    own.hang = True
    clock = ManualClock()
    models = ModelCatalog(clock=clock)
    models.follow(settings.deployment, upstreams)
    models.start()
    try:
        listing = asyncio.ensure_future(models.listing())
        await own.asked.wait()  # the round has started, and hangs on `own`
        await clock.advance(FIRST_WAIT - 0.5)
        assert not listing.done()
        await clock.advance(0.5)
        assert listing.done()
        assert ids(listing.result()) == [*ROUTES, *[m for m in SIMULATED if m != "gpt-4"]]  # the simulator answered
        own.released.set()
        await _round_done(models, 1)
        assert "llama-3" in await listed(models)
    finally:
        await models.aclose()


async def test_a_reload_fetches_again_at_once(
    catalog: tuple[ModelCatalog, ManualClock], settings: Settings, upstreams: dict[str, Upstream], own: OwnUpstream
) -> None:
    models, _ = catalog
    await listed(models)
    own.ids = ["phi-3"]
    models.follow(settings.deployment, upstreams)  # what a reload does; no time passes
    assert (await listed(models))[-1:] == ["phi-3"]
    assert own.calls == 2
    models.follow(settings.deployment, {"sim": upstreams["sim"]})  # `own` is gone from the policy: so are its models
    assert "phi-3" not in await listed(models)


async def _round_done(models: ModelCatalog, rounds: int) -> None:
    """Wait until the catalog has ended `rounds` rounds of fetches (real requests on loopback: no clock to move)."""
    await models.after_round(rounds)


# --- through the app --------------------------------------------------------------------------------------------


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(settings) as http:
        yield http


async def test_the_app_lists_routes_aliases_and_upstream_models_as_openai_does(app: httpx.AsyncClient) -> None:
    response = await app.get("/v1/models")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    validate("ListModelsResponse", body)
    assert [m["id"] for m in body["data"]] == [
        *ROUTES,
        *[m for m in SIMULATED if m != "gpt-4"],
        "llama-3",
        "mistral-7b",
    ]
    for model in body["data"]:
        validate("Model", model)
    assert (await app.get("/models")).json() == body


@pytest.mark.parametrize(
    ("model_id", "owned_by"), [("fast", "turnout"), ("gpt-4", "turnout"), ("gpt-4o", "openai"), ("llama-3", "own")]
)
async def test_the_app_retrieves_a_route_an_alias_or_an_upstream_model(
    app: httpx.AsyncClient, model_id: str, owned_by: str
) -> None:
    response = await app.get(f"/v1/models/{model_id}")
    assert response.status_code == 200
    validate("Model", response.json())
    assert (response.json()["id"], response.json()["owned_by"]) == (model_id, owned_by)


async def test_an_unknown_model_is_a_404_in_openais_form(app: httpx.AsyncClient) -> None:
    response = await app.get("/v1/models/gpt-does-not-exist")
    assert response.status_code == 404
    validate("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == "model"
    assert "gpt-does-not-exist" in response.json()["error"]["message"]


async def test_a_reload_lists_the_new_policy_and_fetches_its_upstreams_again(
    simulator: SimulatorServer, own: OwnUpstream, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    env = {"SIM_URL": simulator.base_url, "OWN_URL": own.base_url, "TURNOUT_CONFIG": str(policy)}
    async with open_resources(load_settings(env), reload_settings=lambda: load_settings(env)) as resources:
        assert (await listed(resources.models))[-2:] == ["llama-3", "mistral-7b"]
        rounds = resources.models.rounds
        # `own` and its route leave the policy; a route named like an upstream model comes.
        changed = POLICY.replace("  local: {upstream: own, model: llama-3}\n", "  gpt-4o-mini: {upstream: sim}\n")
        changed = changed.replace('  own: {base_url: "${OWN_URL}", api_key: sk-models-own-key-0123456789}\n', "")
        policy.write_text(textwrap.dedent(changed), encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        await resources.models.after_round(rounds + 1)
        assert resources.reloads == 1
        assert await listed(resources.models) == [
            "support-ft",
            "gpt-4",
            "gpt-4o-mini",
            "fast",
            *[m for m in SIMULATED if m not in ("gpt-4", "gpt-4o-mini")],
        ]
        assert (
            httpx.Response(200, content=await resources.models.get("gpt-4o-mini") or b"").json()["owned_by"]
            == "turnout"
        )
