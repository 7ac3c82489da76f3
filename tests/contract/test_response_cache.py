"""Every `ResponseCache` implementation passes the same tests (Litestar's `store` fixture style).

Time passes as each store counts it: the memory store runs on a manual clock that the tests move on, Redis
expires keys on its own clock, so there the tests wait for real, just past the shortest TTL (`SHORT`): a wait
starts after Redis ran the command that set the TTL, so it is never too short, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from proxy.cache.memory import MemoryResponseCache
from proxy.cache.redis import RedisResponseCache
from proxy.cache.store import ResponseCache
from proxy.config.sections import CacheSettings
from tests.manual_clock import ManualClock

SHORT = 0.02
"""Seconds: a TTL meant to run out (Redis counts milliseconds)."""
PAST = 0.05
"""Seconds: longer than `SHORT` on any clock."""


@dataclass(frozen=True)
class Store:
    cache: ResponseCache
    later: Callable[[float], Awaitable[None]]
    """Let that many seconds pass on the store's clock: the manual clock moved on, or a real wait for Redis."""


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        clock = ManualClock()
        yield Store(MemoryResponseCache(1 << 20, clock=clock.now), clock.advance)
        return
    settings = CacheSettings(url=redis_url, key_prefix=redis_prefix, timeout=1.0)
    backend = RedisResponseCache(settings)
    yield Store(backend, asyncio.sleep)
    await backend.aclose()


@pytest.fixture
def cache(store: Store) -> ResponseCache:
    return store.cache


async def test_a_missing_key_is_none(cache: ResponseCache) -> None:
    assert await cache.get("absent") is None


async def test_set_then_get_returns_the_bytes(cache: ResponseCache) -> None:
    await cache.set("k", b"\x00answer\xff", 60)
    assert await cache.get("k") == b"\x00answer\xff"


async def test_set_replaces_the_value(cache: ResponseCache) -> None:
    await cache.set("k", b"one", 60)
    await cache.set("k", b"two", 60)
    assert await cache.get("k") == b"two"


async def test_an_entry_expires_after_its_ttl(cache: ResponseCache, store: Store) -> None:
    await cache.set("short", b"v", SHORT)
    await cache.set("long", b"v", 60)
    await store.later(PAST)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"v"


async def test_delete_forgets(cache: ResponseCache) -> None:
    await cache.set("k", b"v", 60)
    await cache.delete("k")
    assert await cache.get("k") is None


async def test_a_lock_is_taken_once_until_released(cache: ResponseCache) -> None:
    held = await cache.lock("l", 60)
    assert held is not None
    assert await cache.lock("l", 60) is None
    assert await cache.unlock(held) is True
    assert await cache.lock("l", 60) is not None


async def test_a_lock_expires(cache: ResponseCache, store: Store) -> None:
    assert await cache.lock("l", SHORT) is not None
    await store.later(PAST)
    assert await cache.lock("l", 60) is not None


async def test_a_held_lock_is_renewed_and_a_released_one_is_not(cache: ResponseCache) -> None:
    held = await cache.lock("l", 60)
    assert held is not None
    assert await cache.renew(held, 60) is True
    assert await cache.unlock(held) is True
    assert await cache.renew(held, 60) is False
    assert await cache.unlock(held) is True  # nothing left to release: done


async def test_a_renewed_lock_outlives_its_first_ttl(cache: ResponseCache, store: Store) -> None:
    held = await cache.lock("l", 0.25)  # renewed within 0.02 s: a quarter of a second to spare on a busy machine
    assert held is not None
    await store.later(SHORT)
    assert await cache.renew(held, 1.0) is True
    await store.later(0.25)  # past the first TTL, far within the renewed one
    assert await cache.lock("l", 60) is None


async def test_a_holder_never_releases_or_renews_a_lock_another_took_after_its_own_expired(
    cache: ResponseCache, store: Store
) -> None:
    first = await cache.lock("l", SHORT)
    assert first is not None
    await store.later(PAST)
    second = await cache.lock("l", 60)
    assert second is not None
    assert await cache.renew(first, SHORT) is False
    assert await cache.unlock(first) is True  # too late, and done: the lock is the second's now
    assert await cache.lock("l", 60) is None
    assert await cache.unlock(second) is True
    assert await cache.lock("l", 60) is not None


async def test_push_keeps_the_newest_first_and_trims(cache: ResponseCache) -> None:
    for item in (b"a", b"b", b"c", b"d"):
        await cache.push("list", item, keep=3, ttl=60)
    assert await cache.items("list") == [b"d", b"c", b"b"]
    assert await cache.items("other") == []


async def test_a_list_expires(cache: ResponseCache, store: Store) -> None:
    await cache.push("list", b"a", keep=3, ttl=SHORT)
    await store.later(PAST)
    assert await cache.items("list") == []


async def test_keys_do_not_collide_with_lists_or_locks(cache: ResponseCache) -> None:
    await cache.set("a", b"value", 60)
    await cache.push("b", b"item", keep=2, ttl=60)
    assert await cache.lock("c", 60)
    assert await cache.get("a") == b"value"
    assert await cache.items("b") == [b"item"]
    assert await cache.get("b") is None


async def test_name_says_which_backend(cache: ResponseCache) -> None:
    assert cache.name in {"memory", "redis"}


async def test_a_replica_never_releases_or_renews_a_lock_another_took_after_its_own_expired(
    redis_url: str, redis_prefix: str
) -> None:
    settings = CacheSettings(url=redis_url, key_prefix=redis_prefix, timeout=1.0)
    # The first's clock stands still, so it cannot know its lock expired and asks Redis, whose token check says no.
    first, second = RedisResponseCache(settings, clock=lambda: 0.0), RedisResponseCache(settings)
    direct = aioredis.Redis.from_url(redis_url)
    try:
        mine = await first.lock("l", SHORT)
        assert mine is not None
        await asyncio.sleep(PAST)  # Redis's clock
        theirs = await second.lock("l", 60)
        assert theirs is not None
        assert await first.renew(mine, SHORT) is False
        assert await first.unlock(mine) is True  # too late, and done: the lock is the second's now
        assert await direct.pttl(f"{redis_prefix}:l") > 50_000  # still the second's, for its 60 s
        assert await first.lock("l", 60) is None
        assert await second.unlock(theirs) is True
        assert await first.lock("l", 60) is not None
    finally:
        await first.aclose()
        await second.aclose()
        await direct.aclose()
