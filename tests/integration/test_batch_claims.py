"""A batch is charged once however many replicas relay it: the claims in a shared Redis, and in memory."""

from __future__ import annotations

import asyncio

import pytest

from proxy.batches import MemoryClaims, RedisClaims, open_claims
from proxy.config.sections import CacheSettings
from tests.redis_server import RedisServer

pytestmark = pytest.mark.asyncio


async def test_two_replicas_claim_a_batch_once(redis_url: str, redis_prefix: str) -> None:
    settings = CacheSettings(url=redis_url, key_prefix=redis_prefix)
    first, second = RedisClaims(settings), RedisClaims(settings)
    try:
        claimed = await asyncio.gather(*(claims.claim("batch_abc") for claims in (first, second, first, second)))
        assert sorted(claimed) == [False, False, False, True]
        assert await second.claim("batch_other") is True
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_redis_that_fails_charges_nothing_then(own_redis: RedisServer) -> None:
    settings = CacheSettings(url=own_redis.url, timeout=0.2, connect_timeout=0.2)
    claims = open_claims(settings)
    try:
        own_redis.stop()
        assert await claims.claim("batch_abc") is False  # logged; the next fetch tries again
    finally:
        await claims.aclose()


async def test_memory_keeps_the_newest_ids() -> None:
    claims = MemoryClaims(limit=2)
    assert [await claims.claim(name) for name in ("a", "b", "a", "c", "a")] == [True, True, False, True, True]
    assert isinstance(open_claims(CacheSettings()), MemoryClaims)
