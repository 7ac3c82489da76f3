"""What counting a request's limits costs: `python -m tests.bench.limits [--requests N] [--redis URL]`.

One request is an `acquire` and a `settle` for two scopes, a key (rpm, tpm and a monthly budget) and its
team (a budget), with a reservation and a cost, as the request path will do them. Microseconds per request
(the best of three rounds of N, one request at a time):

- `MemoryLimiter`: this process's counters;
- `RedisLimiter` on the Redis at `--redis` (default 127.0.0.1:6379, under a prefix of its own, deleted
  afterwards): one Lua script each for acquire and settle, two round trips; also acquire alone, and the
  requests per second of 50 at a time (`asyncio.gather`) on one connection pool;
- a `PING` with the same client: the floor of one round trip on this machine, now (a loaded machine's
  loopback is several times slower than an idle one's, and the figures above move with it).

The limits are set far above what the run reaches, so that every request is admitted and counted in full.
Checking the key itself is `KeyRing.find` over 100 keys (an SQLite file's, loaded once). What a request
waits for is the key check and the acquire: the settle runs once its response has ended, in the background
(`proxy.access.Access.settle_soon`). Never part of the test suite: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import redis.asyncio as aioredis

from proxy.auth.keyring import KeyRing
from proxy.auth.keys import KeyRecord, digest_of, new_key
from proxy.auth.limits import Limiter, Limits, MemoryLimiter, Scope
from proxy.auth.limits_redis import RedisLimiter
from proxy.auth.sqlite import SqliteDatabase
from proxy.tasks import BackgroundTasks

SCOPES = (
    Scope("key", "bench", Limits(rpm=10**9, tpm=10**12, budget_usd=Decimal(10**6), period="month")),
    Scope("team", "bench-team", Limits(budget_usd=Decimal(10**6), period="month")),
)
RESERVE = Decimal("0.02")
COST = Decimal("0.0134")


async def one(limiter: Limiter) -> None:
    hold = await limiter.acquire(SCOPES, reserve_usd=RESERVE)
    await limiter.settle(hold, cost_usd=COST, tokens=512)


async def per_request(limiter: Limiter, requests: int, *, settle: bool = True) -> float:
    """Microseconds per request, the best of three rounds, one request at a time."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(requests):
            if settle:
                await one(limiter)
            else:
                await limiter.acquire(SCOPES, reserve_usd=Decimal(0))
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


async def ping(client: aioredis.Redis, requests: int) -> float:
    """Microseconds per PING, the best of three rounds."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(requests):
            await client.ping()
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


async def concurrent(limiter: Limiter, requests: int, width: int = 50) -> float:
    """Requests per second, `width` at a time."""
    started = time.perf_counter()
    for _ in range(requests // width):
        await asyncio.gather(*(one(limiter) for _ in range(width)))
    return (requests // width * width) / (time.perf_counter() - started)


async def key_check(requests: int) -> float:
    """Microseconds per `KeyRing.find` of a known key among 100, the best of three rounds."""
    with tempfile.TemporaryDirectory() as directory:
        database = SqliteDatabase(Path(directory) / "bench.db")
        await database.open()
        keys = [new_key() for _ in range(100)]
        for index, key in enumerate(keys):
            record = KeyRecord(
                name=f"k{index}", digest=digest_of(key.encode()), prefix=key[:8], created_at=datetime.now(UTC)
            )
            await database.create_key(record)
        ring, tasks = KeyRing(database, refresh=60), BackgroundTasks()
        await ring.start(tasks)
        presented = [key.encode() for key in keys]
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for index in range(requests):
                ring.find(presented[index % 100])
            best = min(best, (time.perf_counter() - started) / requests * 1e6)
        await ring.close()
        await database.close()
        return best


async def main(requests: int, redis_url: str) -> None:
    find = await key_check(requests)
    print(f"key check (find):       {find:8.1f} µs/request")
    memory = MemoryLimiter()
    await per_request(memory, 1000)  # warm up
    print(f"memory  acquire+settle: {await per_request(memory, requests):8.1f} µs/request")
    memory_path = await per_request(memory, requests, settle=False)
    print(f"memory  request path:   {find + memory_path:8.1f} µs/request (key check + acquire)")

    client = aioredis.Redis.from_url(redis_url)
    prefix = f"turnout-bench-{uuid.uuid4().hex[:8]}"
    redis = RedisLimiter(client, prefix=prefix, timeout=1.0)
    try:
        await per_request(redis, 200)  # warm up: connections, scripts loaded
        redis_requests = max(1, requests // 10)
        print(f"redis   acquire+settle: {await per_request(redis, redis_requests):8.1f} µs/request")
        acquire = await per_request(redis, redis_requests, settle=False)
        print(f"redis   acquire alone:  {acquire:8.1f} µs/request")
        print(f"redis   request path:   {find + acquire:8.1f} µs/request (key check + acquire)")
        print(f"redis   50 at a time:   {await concurrent(redis, redis_requests):8.0f} requests/s")
        print(f"redis   PING:           {await ping(client, redis_requests):8.1f} µs (one round trip)")
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.redis))
