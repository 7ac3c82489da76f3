"""Redis trouble never fails a request: a stopped or stalled Redis is a miss, logged and counted, then it comes back.

These tests start and stop a redis-server of their own (with a password), never the shared one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
from proxy.cache.redis import RedisResponseCache
from proxy.config.sections import CacheSettings
from proxy.config.settings import load_settings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process
from tests.integration.test_cache import ask, body, unique
from tests.manual_clock import ManualClock
from tests.redis_server import RedisServer

POLICY = """
upstreams:
  sim: {{base_url: "${{SIM_URL}}", api_key: sk-outage-test-key-0123456789}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
cache: {{url: "${{CACHE_URL}}", timeout: 0.1, connect_timeout: 0.1, retry_after: {retry_after}}}
rules:
  - name: default
    route: gpt4
"""


def cache_errors(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("turnout_cache_errors_total")


async def test_the_backend_turns_failures_into_misses_counts_them_and_recovers(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    settings = CacheSettings(url=own_redis.url, timeout=0.1, connect_timeout=0.1, retry_after=0.2)
    clock = ManualClock()  # when Redis is skipped, and until when, is the cache's own clock
    cache = RedisResponseCache(settings, recorder=Recorder(metrics), clock=clock.now)
    try:
        await cache.set("k", b"v", 60)
        assert await cache.get("k") == b"v"

        own_redis.stop()
        started = time.perf_counter()
        assert await cache.get("k") is None
        assert time.perf_counter() - started < 1.0  # bounded by the 0.1 s timeouts, not by TCP
        assert cache_errors(metrics) == 1
        assert await cache.get("k") is None  # skipped without asking while Redis is down
        assert cache_errors(metrics) == 1
        held = await cache.lock("l", 1)  # better one more upstream call than none
        assert held is not None
        assert await cache.renew(held, 1) is False  # granted without asking: nothing to renew or release
        assert await cache.unlock(held) is True
        await cache.set("k2", b"v", 60)  # never raises

        own_redis.start()
        await clock.advance(0.1)
        assert not cache.available  # still skipped: retry_after has not passed
        await clock.advance(0.1)
        await cache.set("k", b"back", 60)
        assert await cache.get("k") == b"back"
    finally:
        await cache.aclose()
    assert "failed on get" in caplog.text
    assert own_redis.password is not None
    assert own_redis.password not in caplog.text


async def test_a_stalled_redis_is_a_miss_after_the_timeout(own_redis: RedisServer) -> None:
    metrics = Metrics()
    clock = ManualClock()
    settings = CacheSettings(url=own_redis.url, timeout=0.1, connect_timeout=0.1, retry_after=0.1)
    cache = RedisResponseCache(settings, recorder=Recorder(metrics), clock=clock.now)
    try:
        await cache.set("k", b"v", 60)
        own_redis.pause()
        try:
            started = time.perf_counter()
            assert await cache.get("k") is None
            assert time.perf_counter() - started < 1.0  # bounded by the 0.1 s timeouts, not by TCP
            assert cache_errors(metrics) == 1
        finally:
            own_redis.resume()
        assert await cache.get("k") is None  # skipped for retry_after
        await clock.advance(0.1)
        assert await cache.get("k") == b"v"
    finally:
        await cache.aclose()


async def test_requests_keep_being_answered_while_redis_is_down_and_hits_return_after(
    own_redis: RedisServer, simulator: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY.format(retry_after=0.3)))
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path), "CACHE_URL": own_redis.url}
    async with in_process(load_settings(env)) as http:
        payload = body(unique())
        assert (await ask(http, payload)).headers["x-turnout-cache"] == "miss"
        assert (await ask(http, payload)).headers["x-turnout-cache"] == "hit"

        own_redis.stop()
        for stream in (False, True, False):
            response = await ask(http, {**payload, "stream": stream})
            assert response.status_code == 200
            assert response.headers["x-turnout-cache"] == "miss"

        own_redis.start()  # empty again: nothing was persisted
        await asyncio.sleep(0.4)
        statuses = []
        for _ in range(3):
            statuses.append((await ask(http, payload)).headers["x-turnout-cache"])
            await asyncio.sleep(0.05)
        assert statuses == ["miss", "hit", "hit"]
    assert "response cache: redis at redis://***@127.0.0.1" in caplog.text
    assert "failed on" in caplog.text
    assert own_redis.password is not None
    assert own_redis.password not in caplog.text


async def test_an_unreachable_redis_from_the_start_still_answers(simulator: SimulatorServer, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY.format(retry_after=1)))
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path), "CACHE_URL": dead}
    async with in_process(load_settings(env)) as http:
        responses = await asyncio.gather(*(ask(http, body(unique())) for _ in range(5)))
        exposition = (await http.get("/metrics")).text
    assert all(r.status_code == 200 and r.headers["x-turnout-cache"] == "miss" for r in responses)
    errors = [line for line in exposition.splitlines() if line.startswith("turnout_cache_errors_total ")]
    assert errors
    assert float(errors[0].split()[1]) >= 1  # counted for ops, not only logged
    assert isinstance(responses[0], httpx.Response)
