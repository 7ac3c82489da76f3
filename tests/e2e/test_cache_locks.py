"""Single-flight locks through the real server when Redis misbehaves: no lock is left that nobody holds.

Each test runs `turnout serve` against a redis-server of its own (`own_redis`) with `lock_ttl: 60`, and
the default `lock_lease` (3 s). What it checks is state: the `lock:*` keys left in Redis, read on a
connection of the test's own, which requests were answered, and which reached the simulated upstream
(by request id). Every wait has a hang guard, `GUARD` (15 s), far below `lock_ttl`: a request that
waited out a lock nobody holds, or a lock left for `lock_ttl`, fails the test; no duration is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.e2e.conftest import RunningProcess, SimulatorCalls, new_request_id, running, start_turnout, turnout_env
from tests.lossy_link import LossyLink
from tests.redis_server import RedisServer

GUARD = 15.0
"""Hang guard for every wait, in seconds: well above the lease (3 s), well below `lock_ttl` (60 s)."""
POLICY = """\
upstreams:
  sim: {{base_url: "{upstream}", api_key: "${{OPENAI_API_KEY}}"}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
cache:
  url: "{redis_url}"
  key_prefix: "{prefix}"
  lock_ttl: 60
  timeout: 0.1
  connect_timeout: 0.2
  retry_after: 0.5
rules:
  - name: default
    route: gpt4
"""
Serve = Callable[[str], contextlib.AbstractContextManager[RunningProcess]]
FAIL = {"x-simulated-fault": "500", "x-simulated-latency-ms": "100"}
"""The upstream fails: there is never an answer to store, so every request goes through the lock."""


@pytest.fixture
async def direct(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """The test's own connection to Redis (a `CLIENT KILL TYPE normal` sent on it spares it)."""
    client = aioredis.Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"turnout-e2e-locks-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def serve(simulator: RunningProcess, prefix: str, tmp_path: Path) -> Serve:
    """`with serve(redis_url) as turnout`: a Turnout with the Redis cache at `redis_url`."""

    @contextlib.contextmanager
    def start(redis_url: str) -> Iterator[RunningProcess]:
        path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(POLICY.format(upstream=f"{simulator.origin}/v1", redis_url=redis_url, prefix=prefix))
        # The upstream may take 20 s (a holder that works for longer than a lease), not 1 s as in other e2e tests.
        env = turnout_env(simulator, TURNOUT_UPSTREAM_READ_TIMEOUT="30", TURNOUT_CONFIG=str(path))
        with running(start_turnout(env)) as process:
            yield process

    return start


def question() -> dict[str, Any]:
    messages = [{"role": "user", "content": f"What is single flight? ({uuid.uuid4().hex[:8]})"}]
    return {"model": "gpt-4", "messages": messages, "temperature": 0}


async def ask(http: httpx.AsyncClient, body: dict[str, Any], request_id: str, **headers: str) -> httpx.Response:
    return await http.post("/v1/chat/completions", json=body, headers={"x-request-id": request_id, **headers})


async def lock_keys(direct: aioredis.Redis, prefix: str) -> list[bytes]:
    return [key async for key in direct.scan_iter(match=f"{prefix}:lock:*", count=1000)]


async def eventually(check: Callable[[], Awaitable[bool]], guard: float = GUARD) -> bool:
    """Whether `check()` holds within `guard` seconds (polled; a hang guard, not a measurement)."""
    deadline = time.monotonic() + guard
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_lock_whose_set_reply_was_lost_is_released_and_the_next_request_is_answered(
    own_redis: RedisServer,
    direct: aioredis.Redis,
    prefix: str,
    serve: Serve,
    simulator_call: SimulatorCalls,
) -> None:
    link = LossyLink(own_redis.port)
    try:
        with serve(link.url(own_redis.password)) as turnout:
            async with httpx.AsyncClient(base_url=turnout.origin, timeout=GUARD) as http:
                body = question()
                link.lose_replies_to(b"\r\nNX\r\n")  # Redis takes the lock; Turnout never hears so
                first = await asyncio.gather(*(ask(http, body, new_request_id(), **FAIL) for _ in range(4)))
                assert [r.status_code for r in first] == [502] * 4  # answered: the upstream's failure, mapped
                assert link.lost >= 1
                link.lose_replies_to(None)

                # The lock its holder may hold is released (old: left to expire after lock_ttl, 60 s).
                assert await eventually(lambda: _no_locks(direct, prefix))
                request_id = new_request_id()
                response = await ask(http, body, request_id)  # old: waits out lock_ttl on a lock nobody holds
                assert response.status_code == 200
                assert response.headers["x-turnout-cache"] == "miss"
                assert simulator_call.find(request_id) is not None
    finally:
        link.close()


async def _no_locks(direct: aioredis.Redis, prefix: str) -> bool:
    return not await lock_keys(direct, prefix)


async def test_client_kills_under_load_leave_no_orphaned_lock_and_identical_requests_keep_being_answered(
    own_redis: RedisServer,
    direct: aioredis.Redis,
    prefix: str,
    serve: Serve,
    simulator_call: SimulatorCalls,
) -> None:
    bodies = [question() for _ in range(4)]
    statuses: list[int | str] = []
    with serve(own_redis.url) as turnout:
        async with httpx.AsyncClient(base_url=turnout.origin, timeout=GUARD) as http:
            stop = asyncio.Event()

            async def load(worker: int) -> None:  # 4 identical requests at a time for each of 4 questions
                while not stop.is_set():
                    try:
                        response = await ask(http, bodies[worker % 4], new_request_id(), **FAIL)
                        statuses.append(response.status_code)
                    except httpx.TimeoutException:
                        statuses.append("hung")

            workers = [asyncio.ensure_future(load(i)) for i in range(16)]
            await asyncio.sleep(0.3)
            kills = 0
            for _ in range(6):  # what `redis-cli client kill type normal` does, six times, under load
                kills += await direct.client_kill_filter(_type="normal")
                await asyncio.sleep(0.25)
            await asyncio.sleep(1.5)  # and on, past `retry_after`: requests now meet whatever locks were left
            stop.set()
            await asyncio.gather(*workers)
            assert kills > 0
            assert statuses  # the load ran
            assert set(statuses) == {502}, f"{statuses.count('hung')} requests hung on a lock"

            assert await eventually(lambda: _no_locks(direct, prefix))
            await asyncio.sleep(1.0)  # past `retry_after`: the cache asks Redis again
            for body in bodies:  # single flight works again: one upstream call for three identical requests
                ids = [new_request_id() for _ in range(3)]
                slow = {"x-simulated-latency-ms": "300"}
                answers = await asyncio.gather(*(ask(http, body, request_id, **slow) for request_id in ids))
                assert [r.status_code for r in answers] == [200] * 3
                assert sum(simulator_call.find(request_id) is not None for request_id in ids) == 1
    assert await lock_keys(direct, prefix) == []


async def test_a_dead_holder_s_lock_lapses_within_its_lease_and_the_other_replica_answers(
    own_redis: RedisServer,
    direct: aioredis.Redis,
    prefix: str,
    serve: Serve,
    simulator_call: SimulatorCalls,
) -> None:
    body = question()
    with serve(own_redis.url) as holder, serve(own_redis.url) as other:
        async with (
            httpx.AsyncClient(base_url=holder.origin, timeout=GUARD) as to_holder,
            httpx.AsyncClient(base_url=other.origin, timeout=GUARD) as to_other,
        ):
            slow = asyncio.ensure_future(ask(to_holder, body, new_request_id(), **{"x-simulated-latency-ms": "20000"}))
            assert await eventually(lambda: _has_locks(direct, prefix))
            [key] = await lock_keys(direct, prefix)
            token = await direct.get(key)
            waiter_id = new_request_id()
            waiter = asyncio.ensure_future(ask(to_other, body, waiter_id))
            await asyncio.sleep(4.0)  # longer than a lease: the live holder renews its lock meanwhile
            assert await direct.get(key) == token
            assert not waiter.done()
            assert simulator_call.find(waiter_id) is None  # it waits for the holder's answer

            holder.process.kill()  # SIGKILL: no release; its lock lapses within the lease (old: after 60 s)
            response = await waiter
            assert response.status_code == 200
            assert simulator_call.find(waiter_id) is not None  # it asked the upstream itself
            with contextlib.suppress(httpx.HTTPError):
                await slow
    assert await eventually(lambda: _no_locks(direct, prefix))


async def _has_locks(direct: aioredis.Redis, prefix: str) -> bool:
    return bool(await lock_keys(direct, prefix))
