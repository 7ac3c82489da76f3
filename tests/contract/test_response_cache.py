"""Every `ResponseCache` implementation passes the same tests (Litestar's `store` fixture style)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy.cache import MemoryResponseCache, ResponseCache
from proxy.cache_redis import RedisResponseCache
from proxy.policyfile import CacheSettings


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
    assert await cache.lock("l", 60) is True
    assert await cache.lock("l", 60) is False
    await cache.unlock("l")
    assert await cache.lock("l", 60) is True


async def test_a_lock_expires(cache: ResponseCache) -> None:
    assert await cache.lock("l", 0.05) is True
    await asyncio.sleep(0.15)
    assert await cache.lock("l", 60) is True


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


async def test_a_replica_never_releases_a_lock_another_took_after_its_own_expired(
    redis_url: str, redis_prefix: str
) -> None:
    settings = CacheSettings(url=redis_url, key_prefix=redis_prefix, timeout=1.0)
    first, second = RedisResponseCache(settings), RedisResponseCache(settings)
    try:
        assert await first.lock("l", 0.05)
        await asyncio.sleep(0.15)
        assert await second.lock("l", 60)
        await first.unlock("l")  # too late: the lock is the second's now
        assert not await first.lock("l", 60)
        await second.unlock("l")
        assert await first.lock("l", 60)
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_full_redis_pool_makes_commands_wait_not_fail(redis_url: str, redis_prefix: str) -> None:
    cache = RedisResponseCache(CacheSettings(url=redis_url, key_prefix=redis_prefix, max_connections=1, timeout=1.0))
    try:
        await cache.set("k", b"v", 60)
        assert await asyncio.gather(*(cache.get("k") for _ in range(20))) == [b"v"] * 20
        assert cache.errors == 0
    finally:
        await cache.aclose()
