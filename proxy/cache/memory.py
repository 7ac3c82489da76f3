"""`MemoryResponseCache`: the in-process backend, least recently used first out, each entry with a TTL."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from proxy.cache.store import HeldLock

__all__ = ["MemoryResponseCache"]

_OVERHEAD = 96
"""Bytes an entry costs beyond its key and value (dict slot, tuple, float), counted against the limit."""


class MemoryResponseCache:
    """The in-process cache: least recently used first out when over `max_bytes`, each entry with a TTL."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[float, bytes | tuple[bytes, ...]]] = OrderedDict()
        self._size = 0
        self._clock = clock

    @property
    def name(self) -> str:
        """`memory`."""
        return "memory"

    @property
    def size(self) -> int:
        """Bytes counted against `max_bytes` now."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(key: str, value: bytes | tuple[bytes, ...]) -> int:
        stored = len(value) if isinstance(value, bytes) else sum(map(len, value)) + 8 * len(value)
        return len(key) + stored + _OVERHEAD

    def _live(self, key: str) -> bytes | tuple[bytes, ...] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._size -= self._cost(key, value)

    def _put(self, key: str, value: bytes | tuple[bytes, ...], ttl: float) -> None:
        if key in self._entries:
            self._drop(key)
        cost = self._cost(key, value)
        if cost > self.max_bytes or ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._size += cost
        while self._size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, marked as recently used."""
        value = self._live(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value`; the least recently used entries make room (a value larger than the limit is not kept)."""
        self._put(key, value, ttl)

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        if key in self._entries:
            self._drop(key)

    async def lock(self, key: str, ttl: float) -> HeldLock | None:
        """Take the lock unless a live one exists."""
        if self._live(key) is not None:
            return None
        held = HeldLock(key=key, token=secrets.token_bytes(8))
        self._put(key, held.token, ttl)
        return held

    async def renew(self, held: HeldLock, ttl: float) -> bool:
        """Extend the lock while it is live and still `held`'s."""
        if self._live(held.key) != held.token:
            return False
        self._put(held.key, held.token, ttl)
        return True

    async def unlock(self, held: HeldLock) -> bool:
        """Release the lock if it is still `held`'s (always done: there is no network to fail)."""
        if self._live(held.key) == held.token:
            self._drop(held.key)
        return True

    async def push(self, key: str, item: bytes, *, keep: int, ttl: float) -> None:
        """Prepend `item`, trim to `keep` items, renew the TTL."""
        current = self._live(key)
        old = current if isinstance(current, tuple) else ()
        self._put(key, (item, *old)[:keep], ttl)

    async def items(self, key: str) -> list[bytes]:
        """The list, newest first."""
        value = self._live(key)
        return list(value) if isinstance(value, tuple) else []

    async def aclose(self) -> None:
        """Nothing to release."""
