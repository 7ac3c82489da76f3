"""Single-flight locks in Redis when replies are lost or Redis is skipped: none is left held by nobody.

A redis-server of the test's own sits behind a `LossyLink`, which makes the server run a command and
lose its reply. What the tests check is what is in Redis, read on a connection of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
from proxy.cache.redis import RedisResponseCache
from proxy.config.sections import CacheSettings
from tests.lossy_link import LossyLink
from tests.redis_server import RedisServer

LOCK = "lock:v1:question"
TTL = 60.0
"""Far longer than any test here: a lock that is gone was released, not left to expire."""


@pytest.fixture
def link(own_redis: RedisServer) -> Iterator[LossyLink]:
    relay = LossyLink(own_redis.port)
    yield relay
    relay.close()


@pytest.fixture
async def direct(own_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def cache(link: LossyLink, own_redis: RedisServer, metrics: Metrics) -> AsyncIterator[RedisResponseCache]:
    settings = CacheSettings(url=link.url(own_redis.password), timeout=0.2, connect_timeout=0.5, retry_after=5)
    backend = RedisResponseCache(settings, recorder=Recorder(metrics))
    yield backend
    await backend.aclose()


async def test_a_lock_whose_reply_was_lost_counts_as_held_and_is_released(
    cache: RedisResponseCache, link: LossyLink, direct: aioredis.Redis, metrics: Metrics
) -> None:
    link.lose_replies_to(b"\r\nNX\r\n")
    held = await cache.lock(LOCK, TTL)
    assert held is not None  # it cannot tell: better one more upstream call than none
    assert link.lost == 1
    assert metrics.registry.get_sample_value("turnout_cache_errors_total") == 1
    assert await direct.exists("turnout:" + LOCK) == 1  # the server ran the SET: the lock is held
    link.lose_replies_to(None)

    assert await cache.renew(held, TTL) is True  # the token went out with the SET: the lock is ours to renew
    assert await cache.unlock(held) is True
    assert await direct.exists("turnout:" + LOCK) == 0


async def test_a_release_is_sent_while_the_cache_skips_redis(
    cache: RedisResponseCache, link: LossyLink, direct: aioredis.Redis
) -> None:
    held = await cache.lock(LOCK, TTL)
    assert held is not None
    link.lose_replies_to(b"\r\nGET\r\n")
    assert await cache.get("v1:answer") is None  # a failure: the cache answers misses without asking Redis now
    assert not cache.available
    link.lose_replies_to(None)

    assert await cache.unlock(held) is True
    assert await direct.exists("turnout:" + LOCK) == 0


async def test_a_release_that_fails_says_so_and_succeeds_when_tried_again(
    cache: RedisResponseCache, link: LossyLink, direct: aioredis.Redis
) -> None:
    held = await cache.lock(LOCK, TTL)
    assert held is not None
    link.lose_replies_to(b"return redis.call('del'")
    assert await cache.unlock(held) is False  # the reply was lost: it may still be held
    link.lose_replies_to(None)
    assert await cache.unlock(held) is True
    assert await direct.exists("turnout:" + LOCK) == 0


async def test_a_renewal_keeps_the_lock_past_its_first_lease(own_redis: RedisServer, direct: aioredis.Redis) -> None:
    settings = CacheSettings(url=own_redis.url, timeout=1.0)
    holder, other = RedisResponseCache(settings), RedisResponseCache(settings)
    try:
        # Redis's clock: real waits, each with a quarter of a second to spare on a busy machine.
        held = await holder.lock(LOCK, 0.3)
        assert held is not None
        await asyncio.sleep(0.05)
        assert await holder.renew(held, 0.5)
        await asyncio.sleep(0.25)  # past the first lease, within the renewed one
        assert await other.lock(LOCK, 60) is None
        assert 0 < await direct.pttl("turnout:" + LOCK) <= 500
        await asyncio.sleep(0.5)  # nobody renews it: it lapses, and another replica takes it
        assert await holder.renew(held, 1.0) is False
        assert await other.lock(LOCK, 60) is not None
        assert await holder.unlock(held) is True  # not ours any more: nothing is deleted
        assert await direct.exists("turnout:" + LOCK) == 1
    finally:
        await holder.aclose()
        await other.aclose()
