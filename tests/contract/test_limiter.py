"""Every `Limiter` passes the same tests: the in-process one, and the Redis one on a real Redis.

Both count from a wall clock the test sets and moves (epoch seconds), so a 60 s window or a month takes no
time; the Redis keys' TTLs run on Redis' own clock, far longer than any test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from proxy.auth.limits import Limiter, Limits, MemoryLimiter, Refused, Scope, SpentSince
from proxy.auth.limits_redis import RedisLimiter
from tests.redis_server import RedisServer

NOON = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
USD = Decimal


class WallClock:
    def __init__(self, at: float = NOON) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


MakeLimiter = Callable[..., Limiter]


@pytest.fixture(params=["memory", "redis"])
async def make(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[MakeLimiter, WallClock]]:
    clock = WallClock()
    client = aioredis.Redis.from_url(redis_url)

    def build(spent_since: SpentSince | None = None) -> Limiter:
        if request.param == "memory":
            return MemoryLimiter(spent_since=spent_since, clock=clock)
        return RedisLimiter(client, prefix=redis_prefix, spent_since=spent_since, timeout=2.0, clock=clock)

    yield build, clock
    await client.aclose()


def key(**limits: object) -> Scope:
    return Scope("key", "alice", Limits(**limits))  # type: ignore[arg-type]  # the tests' own limits


def team(**limits: object) -> Scope:
    return Scope("team", "blue", Limits(**limits))  # type: ignore[arg-type]


async def refused(limiter: Limiter, *scopes: Scope, reserve: str = "0") -> Refused:
    with pytest.raises(Refused) as caught:
        await limiter.acquire(scopes, reserve_usd=USD(reserve))
    return caught.value


async def test_rpm_admits_that_many_in_any_minute_and_says_when_one_frees(make):
    build, clock = make
    limiter, scope = build(), key(rpm=3)
    for _ in range(3):
        await limiter.acquire([scope], reserve_usd=USD(0))
        clock.at += 10
    refusal = await refused(limiter, scope)
    assert (refusal.kind, refusal.scope, refusal.retry_after) == ("rpm", scope, 30.0)
    clock.at += 29.9
    assert (await refused(limiter, scope)).retry_after == pytest.approx(0.1)
    clock.at += 0.1  # the first admission is 60 s old: its slot frees, and only its
    await limiter.acquire([scope], reserve_usd=USD(0))
    assert (await refused(limiter, scope)).retry_after == pytest.approx(10.0)


async def test_tpm_counts_settled_tokens_over_the_last_minute(make):
    build, clock = make
    limiter, scope = build(), key(tpm=100)
    first = await limiter.acquire([scope], reserve_usd=USD(0))
    second = await limiter.acquire([scope], reserve_usd=USD(0))  # tokens count when settled, not before
    await limiter.settle(first, cost_usd=USD(0), tokens=60)
    clock.at += 5
    await limiter.settle(second, cost_usd=USD(0), tokens=50)
    clock.at += 5
    refusal = await refused(limiter, scope)
    assert (refusal.kind, refusal.retry_after) == ("tpm", 50.0)  # 110 - the first 60 < 100: when the first goes
    clock.at += 50
    await limiter.acquire([scope], reserve_usd=USD(0))


async def test_a_budget_admits_while_spent_and_reserved_are_under_it(make):
    build, clock = make
    limiter, scope = build(), key(budget_usd=USD("0.10"), period="month")
    holds = [await limiter.acquire([scope], reserve_usd=USD("0.04")) for _ in range(3)]  # 0, 0.04, 0.08 < 0.10
    refusal = await refused(limiter, scope, reserve="0.04")  # 0.12 reserved
    assert refusal.kind == "budget"
    assert refusal.retry_after == datetime(2027, 1, 1, tzinfo=UTC).timestamp() - clock.at
    await limiter.settle(holds[0], cost_usd=USD("0.01"), tokens=10)  # 0.01 spent + 0.08 reserved
    await limiter.acquire([scope], reserve_usd=USD("0.04"))
    await limiter.settle(holds[1], cost_usd=USD("0.04"), tokens=10)  # 0.05 spent + 0.08 reserved
    assert (await refused(limiter, scope)).kind == "budget"


async def test_settling_twice_counts_once(make):
    build, _ = make
    limiter, scope = build(), key(budget_usd=USD("0.10"))
    hold = await limiter.acquire([scope], reserve_usd=USD("0.05"))
    for _ in range(2):
        await limiter.settle(hold, cost_usd=USD("0.05"), tokens=1)
    await limiter.acquire([scope], reserve_usd=USD(0))  # 0.05 spent, not 0.10


async def test_one_scope_refusing_counts_nothing_in_the_others(make):
    build, _ = make
    limiter = build()
    alice, blue = key(rpm=2, budget_usd=USD("1")), team(rpm=1)
    await limiter.acquire([alice, blue], reserve_usd=USD("0.40"))
    refusal = await refused(limiter, alice, blue, reserve="0.40")
    assert (refusal.kind, refusal.scope) == ("rpm", blue)
    # Had the refused request counted in alice's scope, she would have no request and 0.20 of budget left.
    await limiter.acquire([alice], reserve_usd=USD("0.59"))
    assert (await refused(limiter, alice)).kind == "rpm"


async def test_a_budget_refusing_in_a_later_scope_reserves_nothing_earlier(make):
    build, _ = make
    limiter = build()
    alice, blue = key(budget_usd=USD("0.10")), team(budget_usd=USD("0.05"))
    await limiter.settle(await limiter.acquire([blue], reserve_usd=USD(0)), cost_usd=USD("0.05"), tokens=0)
    assert (await refused(limiter, alice, blue, reserve="0.09")).scope == blue
    for _ in range(2):  # with 0.09 of alice's left reserved, the second would be refused
        await limiter.acquire([alice], reserve_usd=USD("0.05"))
    assert (await refused(limiter, alice)).scope == alice


async def test_a_budget_starts_from_what_the_ledger_says_was_spent(make):
    build, _ = make
    asked: list[tuple[str, datetime]] = []

    async def spent_since(scope: Scope, since: datetime) -> Decimal:
        asked.append((scope.name, since))
        return USD("0.07")

    limiter, scope = build(spent_since), key(budget_usd=USD("0.10"), period="day")
    await limiter.acquire([scope], reserve_usd=USD("0.02"))  # 0.07 < 0.10
    await limiter.acquire([scope], reserve_usd=USD("0.02"))  # 0.09 < 0.10
    assert (await refused(limiter, scope)).kind == "budget"
    assert asked == [("alice", datetime(2026, 12, 3, tzinfo=UTC))]  # once, from the day's start


async def test_a_new_period_starts_a_new_budget(make):
    build, clock = make
    asked: list[datetime] = []

    async def spent_since(scope: Scope, since: datetime) -> Decimal:
        asked.append(since)
        return USD(0)

    limiter, scope = build(spent_since), key(budget_usd=USD("0.10"), period="day")
    clock.at = datetime(2026, 12, 31, 23, 59, 50, tzinfo=UTC).timestamp()
    hold = await limiter.acquire([scope], reserve_usd=USD(0))
    await limiter.settle(hold, cost_usd=USD("0.10"), tokens=0)
    assert (await refused(limiter, scope)).retry_after == 10.0
    clock.at += 10
    await limiter.acquire([scope], reserve_usd=USD(0))
    assert asked == [datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)]


async def test_a_reservation_never_settled_expires(make):
    build, clock = make
    limiter, scope = build(), key(budget_usd=USD("0.10"))
    await limiter.acquire([scope], reserve_usd=USD("0.50"))  # its process dies: never settled
    clock.at += 899
    assert (await refused(limiter, scope)).kind == "budget"
    clock.at += 1
    await limiter.acquire([scope], reserve_usd=USD(0))


async def test_a_budget_past_its_soft_ratio_says_so(make):
    build, _ = make
    limiter, scope, blue = build(), key(budget_usd=USD("0.10"), soft_ratio=0.5), team(budget_usd=USD(1))
    hold = await limiter.acquire([scope, blue], reserve_usd=USD("0.02"))
    assert hold.soft_exceeded == ()
    await limiter.settle(hold, cost_usd=USD("0.05"), tokens=0)
    hold = await limiter.acquire([scope, blue], reserve_usd=USD("0.02"))
    assert hold.soft_exceeded == (scope,)
    assert (hold.scopes, hold.reserved_usd) == ((scope, blue), USD("0.02"))


async def test_limits_are_per_scope(make):
    build, _ = make
    limiter = build()
    await limiter.acquire([key(rpm=1)], reserve_usd=USD(0))
    await limiter.acquire([Scope("key", "bob", Limits(rpm=1))], reserve_usd=USD(0))
    await limiter.acquire([Scope("team", "alice", Limits(rpm=1))], reserve_usd=USD(0))  # a team, not the key
    assert (await refused(limiter, key(rpm=1))).kind == "rpm"


async def test_every_redis_key_expires(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        limiter = RedisLimiter(client, prefix=redis_prefix, timeout=2.0)
        scope = key(rpm=5, tpm=100, budget_usd=USD(1))
        hold = await limiter.acquire([scope, team(budget_usd=USD(1))], reserve_usd=USD("0.1"))
        await limiter.settle(hold, cost_usd=USD("0.05"), tokens=20)
        await limiter.acquire([scope], reserve_usd=USD("0.1"))
        names = [name async for name in client.scan_iter(match=f"{redis_prefix}:*")]
        assert len(names) >= 6
        for name in names:
            assert name.startswith(f"{redis_prefix}:limit:".encode())
            assert await client.pttl(name) > 0, name
        spent = await client.hget(f"{redis_prefix}:limit:key:alice:budget:{hold.periods[0]}", "spent")
        assert spent == b"50000000"  # nano-dollars
    finally:
        await client.aclose()


async def test_scripts_are_loaded_again_after_a_redis_restart(own_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        limiter = RedisLimiter(client, prefix="t", timeout=2.0)
        await limiter.acquire([key(rpm=2)], reserve_usd=USD(0))
        await client.script_flush()  # what a restarted Redis has: no scripts
        await limiter.acquire([key(rpm=2)], reserve_usd=USD(0))
        assert (await refused(limiter, key(rpm=2))).kind == "rpm"
    finally:
        await client.aclose()
