"""`ResponseCache`: the protocol every cache backend implements (`memory`, `redis`), and `HeldLock`.

The cache stores opaque bytes under string keys, with a TTL. More operations serve the layers on top:
`lock`/`renew`/`unlock` (single flight: the first of several identical requests calls the upstream,
holding a lock as a lease that it renews, see `proxy.cache.lease`) and `push`/`items` (a short list
per key: the semantic cache's recent questions). `MemoryResponseCache` (`proxy.cache.memory`) and
`RedisResponseCache` (`proxy.cache.redis`) pass the same contract tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["HeldLock", "ResponseCache"]


@dataclass(slots=True, eq=False)
class HeldLock:
    """A lock its caller took, or may have taken: what it takes to renew and release it (one per holder)."""

    key: str
    token: bytes
    """Proves the lock is this holder's; empty when granted without asking the backend: nothing to renew or release."""
    until: float = 0.0
    """The backend's bookkeeping: by then (on its clock) the lock has surely expired."""


class ResponseCache(Protocol):
    """Bytes by key with a TTL, plus a set-if-absent lock and short lists; shared by one process or by all."""

    @property
    def name(self) -> str:
        """`memory` or `redis` (for logs and metrics)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None (absent, expired, or the backend is unreachable)."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` for `ttl` seconds (a failure is logged and counted, never raised)."""
        ...

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        ...

    async def lock(self, key: str, ttl: float) -> HeldLock | None:
        """Take the lock `key` for `ttl` seconds (a lease) unless someone holds it; None when someone does.

        When the backend is unreachable it grants the lock: better one more upstream call than none. When
        it cannot tell (the reply was lost), it grants it too and counts it as held: it is renewed and
        released like one that was taken, or expires `ttl` seconds after the last command.
        """
        ...

    async def renew(self, held: HeldLock, ttl: float) -> bool:
        """Extend `held` to `ttl` seconds from now.

        False when it is not (or no longer) this holder's: there is nothing more to renew. A backend
        that cannot be reached answers True: the lock may still be held, so keep renewing.
        """
        ...

    async def unlock(self, held: HeldLock) -> bool:
        """Release `held` if it is still this holder's.

        True when done (released, expired, or another's by now); False when the backend could not be
        reached and the lock may still be held: try again.
        """
        ...

    async def push(self, key: str, item: bytes, *, keep: int, ttl: float) -> None:
        """Add `item` to the front of the list `key`, keep its first `keep` items, and let it live `ttl` s."""
        ...

    async def items(self, key: str) -> list[bytes]:
        """The list `key`, newest first (empty when absent)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
