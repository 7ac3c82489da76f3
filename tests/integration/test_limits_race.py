"""Budgets across processes on one Redis, and limits while Redis is stopped (`FallbackLimiter`).

The race: two OS processes (spawned, each with its own event loop and connection pool) share one budget
worth 10 answers in Redis, and fire 100 concurrent requests each (`asyncio.gather`); every admitted request
settles a known cost after a short random delay. The measured overspend is printed (`pytest -s`) and held to
the bound `proxy.auth.limits` states: spent - budget < c_k + Σ_F (c_i - r_i), the cost beyond their
reservations of the requests in flight at the last admission.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from proxy.auth.limits import FallbackLimiter, Limits, Refused, Scope
from proxy.auth.limits_redis import RedisLimiter, nano
from tests.manual_clock import ManualClock
from tests.redis_server import RedisServer

ANSWER = Decimal("0.01")
"""What every answer costs."""
BUDGET = 10 * ANSWER
PER_PROCESS = 100
KEY = Scope("key", "racer", Limits(budget_usd=BUDGET, period="month"))
TEAM = Scope("team", "racers", Limits(budget_usd=100 * BUDGET, period="month"))


@dataclass(frozen=True)
class Outcome:
    outcomes: dict[str, int]
    """admitted, or the refusal's kind: how many."""
    most_in_flight: int


def race(redis_url: str, prefix: str, reserve: str, seed: int, ready: Any, go: Any, results: Any) -> None:
    """One process of the race (the target of a spawned process)."""
    results.put(asyncio.run(_race(redis_url, prefix, Decimal(reserve), seed, ready, go)))


async def _race(redis_url: str, prefix: str, reserve: Decimal, seed: int, ready: Any, go: Any) -> Outcome:
    client = aioredis.Redis.from_url(redis_url)
    limiter = RedisLimiter(client, prefix=prefix, timeout=10.0)  # a loaded machine is slow, never down
    rng = random.Random(seed)
    in_flight, most = 0, 0
    await client.ping()
    ready.put(seed)
    go.wait()  # both processes start together

    async def one() -> str:
        nonlocal in_flight, most
        # Counted from before the acquire: one admitted in Redis whose answer has not come back yet is in flight
        # too (counting it only once acquire returns undercounts F, and the bound below then fails spuriously).
        in_flight += 1
        most = max(most, in_flight)
        try:
            hold = await limiter.acquire([KEY, TEAM], reserve_usd=reserve)
        except Refused as refusal:
            in_flight -= 1
            return refusal.kind
        await asyncio.sleep(rng.uniform(0.001, 0.02))
        await limiter.settle(hold, cost_usd=ANSWER, tokens=10)
        in_flight -= 1
        return "admitted"

    outcomes = Counter(await asyncio.gather(*(one() for _ in range(PER_PROCESS))))
    await client.aclose()
    return Outcome(dict(outcomes), most)


def run_race(redis_url: str, prefix: str, reserve: Decimal) -> list[Outcome]:
    spawn = multiprocessing.get_context("spawn")
    ready, results, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    processes = [
        spawn.Process(target=race, args=(redis_url, prefix, str(reserve), seed, ready, go, results)) for seed in (1, 2)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=60)
        go.set()
        outcomes = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
    assert [process.exitcode for process in processes] == [0, 0]
    return outcomes


async def spent_in_redis(redis_url: str, prefix: str) -> Decimal:
    client = aioredis.Redis.from_url(redis_url)
    try:
        names = [name async for name in client.scan_iter(match=f"{prefix}:limit:key:racer:budget:*")]
        (budget,) = names  # the month's hash; its holds went with the last reservation taken back
        spent, reserved = cast("list[bytes | None]", await client.hmget(budget, ["spent", "reserved"]))
    finally:
        await client.aclose()
    assert int(reserved or 0) == 0  # every reservation was taken back
    return Decimal(int(spent or 0)) / 10**9


@pytest.mark.parametrize("reserve", [ANSWER, ANSWER / 2, Decimal(0)], ids=["reserve=cost", "reserve=half", "none"])
def test_two_processes_overspend_one_budget_only_within_the_bound(redis_url: str, redis_prefix: str, reserve):
    outcomes = run_race(redis_url, redis_prefix, reserve)
    admitted = sum(outcome.outcomes.get("admitted", 0) for outcome in outcomes)
    assert sum(sum(outcome.outcomes.values()) for outcome in outcomes) == 2 * PER_PROCESS
    assert {kind for outcome in outcomes for kind in outcome.outcomes} <= {"admitted", "budget"}
    spent = asyncio.run(spent_in_redis(redis_url, redis_prefix))
    assert spent == admitted * ANSWER  # no settle lost, none counted twice
    overspend = spent - BUDGET
    # c_k + Σ_F (c - r), with F at most every request in flight in either process at once.
    in_flight = sum(outcome.most_in_flight for outcome in outcomes)
    bound = ANSWER + in_flight * (ANSWER - reserve)
    print(
        f"\nreserve {reserve} per {ANSWER} answer, budget {BUDGET}: {admitted} admitted, spent {spent}, "
        f"overspend {overspend} (bound {bound}: {in_flight} in flight at most)"
    )
    assert overspend < bound
    if reserve == ANSWER:
        assert overspend == 0  # the budget is a multiple of the cost: not one answer beyond it
    if reserve == ANSWER / 2:  # spent + reserved >= admitted x 0.005 when each is admitted
        assert admitted <= 20


def racer(name: str) -> Scope:
    return Scope("key", name, Limits(rpm=2, budget_usd=Decimal(1)))


async def test_a_stopped_redis_falls_back_to_counting_per_process_and_comes_back(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.auth")
    ledger = Decimal("0.25")

    async def spent_since(scope: Scope, since: object) -> Decimal:
        return ledger

    client = aioredis.Redis.from_url(own_redis.url)
    clock, fallbacks = ManualClock(), []
    limiter = FallbackLimiter(
        RedisLimiter(client, prefix="t", spent_since=spent_since, timeout=0.5),
        on_fallback=lambda: fallbacks.append(1),
        retry_after=5.0,
        clock=clock.now,
    )
    try:
        in_redis = await limiter.acquire([racer("a")], reserve_usd=Decimal("0.10"))
        assert await client.exists("t:limit:key:a:rpm") == 1
        own_redis.stop()

        unsettled = await limiter.acquire([racer("a")], reserve_usd=Decimal(0))  # per process: a fresh window
        await limiter.settle(in_redis, cost_usd=Decimal("0.40"), tokens=5)  # kept for Redis
        await limiter.acquire([racer("a")], reserve_usd=Decimal(0))
        with pytest.raises(Refused) as refusal:
            await limiter.acquire([racer("a")], reserve_usd=Decimal(0))
        assert refusal.value.kind == "rpm"  # counted in this process: 2 a minute
        assert len(fallbacks) == 3
        assert caplog.text.count("redis failed") == 1  # once per outage

        own_redis.start()  # empty: a Redis restarted without persistence
        await limiter.acquire([racer("b")], reserve_usd=Decimal(0))  # still skipped: retry_after has not passed
        assert await client.exists("t:limit:key:b:rpm") == 0
        await clock.advance(5.0)
        await limiter.acquire([racer("b")], reserve_usd=Decimal(0))
        assert await client.exists("t:limit:key:b:rpm") == 1
        assert "redis answers again" in caplog.text
        assert len(fallbacks) == 4
        # Admitted in memory, settled now: Redis has no budget for "a" since its restart, so the ledger has it.
        await limiter.settle(unsettled, cost_usd=Decimal("0.30"), tokens=5)
        ledger = Decimal("0.95")  # 0.25 before, 0.40 and 0.30 since
        hold = await limiter.acquire([racer("a")], reserve_usd=Decimal(0))  # seeds a's budget from the ledger
        budget = f"t:limit:key:a:budget:{hold.periods[0]}"
        assert await client.hget(budget, "spent") == str(nano(Decimal("0.95"))).encode()
        await limiter.settle(hold, cost_usd=Decimal("0.05"), tokens=0)
        assert await client.hget(budget, "spent") == str(nano(Decimal("1.00"))).encode()
        with pytest.raises(Refused) as refusal:
            await limiter.acquire([racer("c"), racer("a")], reserve_usd=Decimal(0))
        assert (refusal.value.kind, refusal.value.scope) == ("budget", racer("a"))
    finally:
        await client.aclose()


async def test_fail_closed_refuses_while_redis_is_stopped(own_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    fallbacks: list[int] = []
    limiter = FallbackLimiter(
        RedisLimiter(client, prefix="t", timeout=0.5), fail_closed=True, on_fallback=lambda: fallbacks.append(1)
    )
    try:
        hold = await limiter.acquire([racer("a")], reserve_usd=Decimal(0))
        own_redis.stop()
        for _ in range(2):
            with pytest.raises(Refused) as refusal:
                await limiter.acquire([racer("a")], reserve_usd=Decimal(0))
            assert (refusal.value.kind, refusal.value.scope) == ("unavailable", None)
        assert len(fallbacks) == 2
        await limiter.settle(hold, cost_usd=Decimal("0.01"), tokens=1)  # never raises
    finally:
        await client.aclose()


async def test_what_redis_did_not_count_while_down_is_counted_when_it_answers(own_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    clock = ManualClock()
    limiter = FallbackLimiter(RedisLimiter(client, prefix="t", timeout=0.5), retry_after=5.0, clock=clock.now)
    try:
        hold = await limiter.acquire([racer("a")], reserve_usd=Decimal("0.20"))
        budget = f"t:limit:key:a:budget:{hold.periods[0]}"
        await client.save()  # the restarted server reads it back: Redis was away, its counters were not lost
        own_redis.stop()
        await limiter.settle(hold, cost_usd=Decimal("0.15"), tokens=3)  # refused a connection: never sent, kept
        in_memory = await limiter.acquire([racer("a")], reserve_usd=Decimal(0))
        await limiter.settle(in_memory, cost_usd=Decimal("0.05"), tokens=3)
        own_redis.start()
        assert await client.hmget(budget, ["spent", "reserved"]) == [b"0", str(nano(Decimal("0.20"))).encode()]
        await clock.advance(5.0)
        await limiter.acquire([racer("b")], reserve_usd=Decimal(0))  # Redis answers: what waited is counted
        assert await client.hmget(budget, ["spent", "reserved"]) == [str(nano(Decimal("0.20"))).encode(), b"0"]
    finally:
        await client.aclose()
