"""`RedisResponseCache`: the `ResponseCache` every replica shares, on `redis.asyncio` with a connection pool.

Redis trouble never fails a request. Every command has a short timeout; a failure or a timeout is
logged (the URL without its password), counted by the recorder (`turnout_cache_errors_total`), and read
as a miss. After a failure the cache skips Redis for `retry_after` seconds, so that a dead Redis costs
requests nothing, then tries again: the cache comes back by itself when Redis does.

Single-flight locks are the exception: renewing and releasing a lock are never skipped (they run in the
background, not on a request's path, and a skipped release would leave the lock to others until it
expires). A `HeldLock` carries its token and the time by which Redis has dropped it for sure (`ttl`
after the last command that set or renewed it; plus the command timeout when the reply was lost),
from the moment its `SET` goes out: a `SET` whose reply was lost may have taken the lock, so it is
renewed and released like one that did, until that time has passed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.accounting.recorder import Recorder
from proxy.cache.store import HeldLock
from proxy.config.sections import CacheSettings
from proxy.wire.redaction import Redactor
from proxy.wire.redisurl import redact_url, url_secrets

__all__ = ["FAILURES", "RedisResponseCache", "redis_client"]

FAILURES: tuple[type[Exception], ...] = (RedisError, OSError)
"""What a Redis call raises when Redis is down, slow or refuses: the callers log it and go on without Redis."""

logger = logging.getLogger("turnout.cache")

_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
"""Delete a lock only when it still holds this caller's token."""
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
"""Extend a lock only when it still holds this caller's token."""

T = TypeVar("T")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def redis_client(url: str, settings: CacheSettings) -> aioredis.Redis:
    """A client for the deployment's Redis at `url`, with `settings`' bounds; it connects on its first command.

    Its pool blocks: at its size, a command waits (up to `timeout`) for a free connection instead of failing.
    Nothing is retried: a failure is answered at once (a miss, a lookup that finds nothing), and the next
    request tries again. The caller closes it (`aclose(close_connection_pool=True)`).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        timeout=settings.timeout,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.connect_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


class RedisResponseCache:
    """Answers in Redis under `{key_prefix}:`, with pooled connections and failures turned into misses."""

    def __init__(
        self,
        settings: CacheSettings,
        *,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Connect lazily to `settings.url` (the first command opens the pool's first connection)."""
        if settings.url is None:
            raise ValueError("the redis cache needs a url")
        self._client = redis_client(settings.url, settings)
        self._prefix = settings.key_prefix + ":"
        self._timeout = settings.timeout + settings.connect_timeout
        self._retry_after = settings.retry_after
        self._where = redact_url(settings.url)
        self._redactor = Redactor(url_secrets(settings.url))
        """Its own password, out of redis-py's error texts (the log formatter removes every other secret too)."""
        self._down_until = 0.0
        self._recorder = recorder
        self._clock = clock

    @property
    def name(self) -> str:
        """`redis`."""
        return "redis"

    @property
    def available(self) -> bool:
        """False while the cache skips Redis after a failure."""
        return self._clock() >= self._down_until

    async def _run(self, what: str, command: Callable[[], Awaitable[T]], fallback: T, *, upkeep: bool = False) -> T:
        """`command`, or `fallback` when it fails or while Redis is skipped (`upkeep`: a lock's, never skipped)."""
        if not upkeep and not self.available:
            return fallback
        try:
            return await asyncio.wait_for(command(), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            already_down = not self.available  # said once when the cache starts answering misses, not per command
            self._down_until = self._clock() + self._retry_after
            if self._recorder is not None:
                self._recorder.cache_failed()
            logger.log(
                logging.DEBUG if already_down else logging.WARNING,
                "cache: redis at %s failed on %s (%s: %s); answering misses for %.1f s",
                self._where,
                what,
                type(exc).__name__,
                self._redactor.text(str(exc)),
                self._retry_after,
            )
            return fallback

    async def ping(self) -> bool:
        """Whether Redis answers now."""
        return bool(await self._run("ping", self._client.ping, False))

    async def get(self, key: str) -> bytes | None:
        """The value, or None (absent, or Redis failing)."""

        async def run() -> bytes | None:
            return cast("bytes | None", await self._client.get(self._prefix + key))

        return await self._run("get", run, None)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store with a TTL in milliseconds."""
        await self._run("set", lambda: self._client.set(self._prefix + key, value, px=max(1, int(ttl * 1000))), None)

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        await self._run("delete", lambda: self._client.delete(self._prefix + key), None)

    def _gone(self, held: HeldLock) -> bool:
        """Whether there is nothing to renew or release: granted without asking, or surely expired by now."""
        return not held.token or held.until <= self._clock()

    async def lock(self, key: str, ttl: float) -> HeldLock | None:
        """`SET key TOKEN NX PX ttl`: held when taken, when the reply was lost (it may be), or if Redis is skipped."""
        held = HeldLock(key=key, token=b"")  # what a skipped Redis grants: nothing was sent

        async def run() -> HeldLock | None:
            # Set before it goes out: if the reply is lost, the SET may have taken the lock all the same.
            held.token, held.until = secrets.token_hex(8).encode(), self._clock() + self._timeout + ttl
            if not await self._client.set(self._prefix + key, held.token, nx=True, px=_ms(ttl)):
                return None
            held.until = self._clock() + ttl  # answered: it ran before now
            return held

        return await self._run("lock", run, held)

    async def renew(self, held: HeldLock, ttl: float) -> bool:
        """`PEXPIRE` the lock if it still holds our token: False once it does not (True when Redis fails)."""
        if self._gone(held):
            return False

        async def run() -> bool:
            before = held.until
            held.until = max(before, self._clock() + self._timeout + ttl)  # it may run even if the reply is lost
            if not await self._client.eval(_RENEW, 1, self._prefix + held.key, held.token, _ms(ttl)):
                return False
            held.until = max(before, self._clock() + ttl)  # answered: it ran before now
            return True

        return await self._run("renew", run, True, upkeep=True)

    async def unlock(self, held: HeldLock) -> bool:
        """Release the lock if it is still ours (it may have expired and been taken by another replica).

        Sent even while Redis is skipped; False when it failed, and the lock may still be held (try again).
        """
        if self._gone(held):
            return True

        async def run() -> bool:
            await self._client.eval(_UNLOCK, 1, self._prefix + held.key, held.token)
            return True

        return await self._run("unlock", run, False, upkeep=True)

    async def push(self, key: str, item: bytes, *, keep: int, ttl: float) -> None:
        """`LPUSH`, `LTRIM` and `PEXPIRE` in one transaction."""

        async def run() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                name = self._prefix + key
                commands: Any = pipe  # redis-py types a pipeline's queued commands as awaitables
                commands.lpush(name, item).ltrim(name, 0, keep - 1).pexpire(name, max(1, int(ttl * 1000)))
                await pipe.execute()

        await self._run("push", run, None)

    async def items(self, key: str) -> list[bytes]:
        """`LRANGE key 0 -1`, newest first."""

        async def run() -> list[bytes]:
            return cast("list[bytes]", await self._client.lrange(self._prefix + key, 0, -1))

        return await self._run("items", run, [])

    async def aclose(self) -> None:
        """Close the client and its pool."""
        await self._client.aclose(close_connection_pool=True)
