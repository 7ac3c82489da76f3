"""The in-process cache: bounded by bytes, least recently used out first, TTL by an injected clock."""

from __future__ import annotations

from proxy.cache.memory import MemoryResponseCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_it_never_holds_more_than_max_bytes() -> None:
    cache = MemoryResponseCache(2000)
    for index in range(50):
        await cache.set(f"k{index}", b"x" * 300, 60)
        assert cache.size <= 2000
    assert 0 < len(cache) < 50


async def test_the_least_recently_used_goes_first() -> None:
    cache = MemoryResponseCache(3 * (2 + 500 + 96))
    for key in ("k1", "k2", "k3"):
        await cache.set(key, b"x" * 500, 60)
    assert await cache.get("k1") is not None  # k1 is now the most recently used
    await cache.set("k4", b"x" * 500, 60)
    assert await cache.get("k2") is None
    assert await cache.get("k1") is not None
    assert await cache.get("k3") is not None
    assert await cache.get("k4") is not None


async def test_a_value_larger_than_the_limit_is_not_kept_and_evicts_nothing() -> None:
    cache = MemoryResponseCache(1000)
    await cache.set("small", b"x", 60)
    await cache.set("huge", b"x" * 2000, 60)
    assert await cache.get("huge") is None
    assert await cache.get("small") == b"x"


async def test_expiry_follows_the_clock_and_frees_the_bytes() -> None:
    clock = Clock()
    cache = MemoryResponseCache(10_000, clock=clock)
    await cache.set("k", b"x" * 100, 10)
    clock.now = 9.9
    assert await cache.get("k") == b"x" * 100
    clock.now = 10.0
    assert await cache.get("k") is None
    assert cache.size == 0


async def test_replacing_a_value_counts_its_size_once() -> None:
    cache = MemoryResponseCache(10_000)
    await cache.set("k", b"x" * 100, 10)
    await cache.set("k", b"x" * 100, 10)
    assert cache.size == len("k") + 100 + 96
