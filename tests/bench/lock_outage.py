"""Single-flight locks around a Redis client kill: orphaned locks and throughput, second by second.

`python -m tests.bench.lock_outage [--seconds S] [--kill-at T] [--workers W] [--questions Q]` starts a
redis-server of its own on a free loopback port, the simulated upstream, and one `turnout serve`
whose cache is that Redis with a short answer TTL, so that the same few questions keep missing and
taking the `lock:*` keys. `W` workers then ask those `Q` questions (each a deterministic request, 50 ms
upstream latency) at random, one request at a time each: a bounded, closed-loop load. At `T` s a
separate connection sends `CLIENT KILL TYPE normal`, which drops every connection Turnout has to
Redis mid-command (the replies of its commands in flight are lost).

Every half second it prints the requests answered in that half second, the `lock:*` keys in Redis,
and how many of them are orphaned: the same key with the same token seen for more than 1 s, far
longer than any upstream call here lasts (a holder that still works renews its token's lease under
the same token, and the upstream answers in 50 ms, so no live holder is that old). At the end it
prints Turnout's own counts of Redis errors and of lookups by result (`/metrics`).

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import cast

import httpx
import redis.asyncio as aioredis

from tests.bench.__main__ import free_port, started
from tests.redis_server import RedisServer

POLICY = """\
upstreams:
  sim: {{base_url: "http://127.0.0.1:{sim}/v1", api_key: sk-bench}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
cache: {{url: "{redis}", key_prefix: bench}}
rules:
  - name: default
    route: gpt4
    cache: {{ttl: 0.5}}
"""
ORPHAN_AGE = 1.0
"""A lock (key and token) seen this long is orphaned: every upstream call here answers in 50 ms."""


async def worker(
    http: httpx.AsyncClient, questions: list[str], rng: random.Random, stop: float, done: list[float]
) -> None:
    headers = {"x-simulated-latency-ms": "50"}
    while time.monotonic() < stop:
        question = rng.choice(questions)
        body = {"model": "gpt-4", "messages": [{"role": "user", "content": question}], "temperature": 0}
        try:
            response = await http.post("/v1/chat/completions", json=body, headers=headers)
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            done.append(time.monotonic())


async def sample(redis: aioredis.Redis, seen: dict[tuple[bytes, bytes], float]) -> tuple[int, int]:
    """(lock keys now, orphaned ones among them); `seen` remembers when each key and token was first seen."""
    now = time.monotonic()
    current: set[tuple[bytes, bytes]] = set()
    async for key in redis.scan_iter(match="bench:lock:*", count=1000):
        token = cast("bytes | None", await redis.get(key))
        if token is not None:
            current.add((key, token))
    for gone in set(seen) - current:
        del seen[gone]
    for lock in current:
        seen.setdefault(lock, now)
    return len(current), sum(now - seen[lock] > ORPHAN_AGE for lock in current)


async def run(port: int, redis_url: str, args: argparse.Namespace) -> None:
    questions = [f"Question {i} ({uuid.uuid4().hex[:6]})" for i in range(args.questions)]
    redis = aioredis.Redis.from_url(redis_url)
    start = time.monotonic()
    stop = start + args.seconds
    done: list[float] = []
    limits = httpx.Limits(max_connections=args.workers)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120.0, limits=limits) as http:
        workers = [
            asyncio.ensure_future(worker(http, questions, random.Random(i), stop, done)) for i in range(args.workers)
        ]
        seen: dict[tuple[bytes, bytes], float] = {}
        killed = False
        print(f"{'t (s)':>6}{'answered/0.5 s':>16}{'lock keys':>11}{'orphaned':>10}")
        tick = start
        while time.monotonic() < stop:
            tick += 0.5
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            if not killed and tick - start >= args.kill_at:
                killed = True
                count = await redis.client_kill_filter(_type="normal")
                print(f"{tick - start:6.1f}  CLIENT KILL TYPE normal: {count} connections")
            locks, orphaned = await sample(redis, seen)
            answered = sum(tick - 0.5 <= at < tick for at in done)
            print(f"{tick - start:6.1f}{answered:>16}{locks:>11}{orphaned:>10}")
        await asyncio.gather(*workers)
        exposition = (await http.get("/metrics")).text
    await redis.aclose()
    counters = [
        line
        for line in exposition.splitlines()
        if line.startswith(("turnout_cache_errors_total", "turnout_cache_lookups_total"))
    ]
    print(f"answered in all: {len(done)}; {'; '.join(counters)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--kill-at", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--questions", type=int, default=40)
    args = parser.parse_args()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        redis = RedisServer()
        redis.start()
        stack.callback(redis.close)
        sim = free_port()
        stack.enter_context(started([sys.executable, "-m", "proxy", "simulate", "--port", str(sim)], sim))
        path = folder / "policy.yaml"
        path.write_text(POLICY.format(sim=sim, redis=redis.url))
        port = free_port()
        env = {**os.environ, "TURNOUT_CONFIG": str(path), "TURNOUT_LOG_LEVEL": "error"}
        stack.enter_context(started([sys.executable, "-m", "proxy", "serve", "--port", str(port)], port, env))
        asyncio.run(run(port, redis.url, args))


if __name__ == "__main__":
    main()
