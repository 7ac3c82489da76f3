"""Every `ResponseCache` implementation passes the same tests (Litestar's `store` fixture style)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from proxy.cache.memory import MemoryResponseCache
from proxy.cache.redis import RedisResponseCache
from proxy.cache.store import ResponseCache
from proxy.config.sections import CacheSettings


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> AsyncIterator[ResponseCache]:
    if request.param == "memory":
        yield MemoryResponseCache(1 << 20)
        return
    settings = CacheSettings(url=redis_url, key_prefix=redis_prefix, timeout=1.0)
    backend = RedisResponseCache(settings)
    yield backend
    await backend.aclose()


async def test_a_missing_key_is_none(cache: ResponseCache) -> None:
    assert await cache.get("absent") is None


async def test_set_then_get_returns_the_bytes(cache: ResponseCache) -> None:
    await cache.set("k", b"\x00answer\xff", 60)
    assert await cache.get("k") == b"\x00answer\xff"


async def test_set_replaces_the_value(cache: ResponseCache) -> None:
    await cache.set("k", b"one", 60)
    await cache.set("k", b"two", 60)
    assert await cache.get("k") == b"two"


async def test_an_entry_expires_after_its_ttl(cache: ResponseCache) -> None:
    await cache.set("short", b"v", 0.05)
    await cache.set("long", b"v", 60)
    await asyncio.sleep(0.15)
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


async def test_a_lock_expires(cache: ResponseCache) -> None:
    assert await cache.lock("l", 0.05) is not None
    await asyncio.sleep(0.15)
    assert await cache.lock("l", 60) is not None


async def test_a_held_lock_is_renewed_and_a_released_one_is_not(cache: ResponseCache) -> None:
    held = await cache.lock("l", 60)
    assert held is not None
    assert await cache.renew(held, 60) is True
    assert await cache.unlock(held) is True
    assert await cache.renew(held, 60) is False
    assert await cache.unlock(held) is True  # nothing left to release: done


async def test_a_renewed_lock_outlives_its_first_ttl(cache: ResponseCache) -> None:
    held = await cache.lock("l", 0.3)
    assert held is not None
    await asyncio.sleep(0.1)
    assert await cache.renew(held, 1.0) is True
    await asyncio.sleep(0.4)
    assert await cache.lock("l", 60) is None


async def test_a_holder_never_releases_or_renews_a_lock_another_took_after_its_own_expired(
    cache: ResponseCache,
) -> None:
    first = await cache.lock("l", 0.05)
    assert first is not None
    await asyncio.sleep(0.15)
    second = await cache.lock("l", 60)
    assert second is not None
    assert await cache.renew(first, 0.05) is False
    assert await cache.unlock(first) is True  # too late, and done: the lock is the second's now
    assert await cache.lock("l", 60) is None
    assert await cache.unlock(second) is True
    assert await cache.lock("l", 60) is not None


async def test_push_keeps_the_newest_first_and_trims(cache: ResponseCache) -> None:
    for item in (b"a", b"b", b"c", b"d"):
        await cache.push("list", item, keep=3, ttl=60)
    assert await cache.items("list") == [b"d", b"c", b"b"]
    assert await cache.items("other") == []


async def test_a_list_expires(cache: ResponseCache) -> None:
    await cache.push("list", b"a", keep=3, ttl=0.05)
    await asyncio.sleep(0.15)
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
        mine = await first.lock("l", 0.05)
        assert mine is not None
        await asyncio.sleep(0.15)
        theirs = await second.lock("l", 60)
        assert theirs is not None
        assert await first.renew(mine, 0.05) is False
        assert await first.unlock(mine) is True  # too late, and done: the lock is the second's now
        assert await direct.pttl(f"{redis_prefix}:l") > 50_000  # still the second's, for its 60 s
        assert await first.lock("l", 60) is None
        assert await second.unlock(theirs) is True
        assert await first.lock("l", 60) is not None
    finally:
        await first.aclose()
        await second.aclose()
        await direct.aclose()
