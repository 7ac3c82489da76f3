"""`AnswerCache`: the pipeline's view of the response cache: plan, look up, single flight, store.

For each request, `begin()` returns a `Ticket`: whether the cache applies (`bypass` when the rule,
the request's determinism or its `cache-control` header says no), the stored answer on a hit, and
on a miss the duty to `finish()` with the answer (or with None when there is none to keep). Only
the first of identical concurrent misses calls the upstream: in this process the others wait for its
answer, and across replicas the Redis lock `lock:<key>` makes the others poll for it.

The lock is a lease of `lock_lease` seconds that its holder renews while its upstream call runs and
releases when it lands (`proxy.cache.lease`), so a lock whose holder has finished, died or lost Redis
is gone within `lock_lease` seconds, and a waiter polling for it takes it over then and calls the
upstream itself. A waiter stops waiting at once when its own poll cannot reach Redis (the holder's
state is then unknown), and any wait ends after `lock_ttl` seconds, however alive the holder is.

A hit is the stored entry replayed in the form the request asks for, by the request's endpoint codec
(`Codec.replay`), read whole first: an entry that does not read (stored by another version, changed in a
shared Redis) is deleted and answered as a miss, and an answer that would not replay is never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from policies import CacheRule, Decision
from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import CacheStatus
from proxy.cache.keys import fields_key
from proxy.cache.lease import SYSTEM_CLOCK, Clock, Lease, keep_lock
from proxy.cache.memory import MemoryResponseCache
from proxy.cache.semantic import best_match, pack
from proxy.cache.store import ResponseCache
from proxy.config.sections import CacheSettings
from proxy.endpoints.base import Codec, Replay
from proxy.tasks import BackgroundTasks
from proxy.wire.answers import UnreadableAnswerError
from proxy.wire.redisurl import redact_url
from routes import Call, Route
from routes.knowledge.embedding import Embedder, Question

__all__ = ["AnswerCache", "SharedCache", "Ticket", "open_backend"]

logger = logging.getLogger("turnout.cache")

SEMANTIC_KEEP = 256
"""Questions remembered per namespace (tenant, route, parameters) for semantic matching."""
_POLL = 0.02


def open_backend(settings: CacheSettings, recorder: Recorder | None = None) -> ResponseCache:
    """The configured backend: Redis when the cache block names a URL (failures told to `recorder`), else in-process."""
    if settings.uses_redis:
        from proxy.cache.redis import RedisResponseCache  # only with Redis: redis-py is slow to import

        return RedisResponseCache(settings, recorder=recorder)
    return MemoryResponseCache(settings.max_bytes)


def _cache_control(call: Call[Any]) -> tuple[bool, bool]:
    """(no-cache, no-store) from the request's `cache-control` header."""
    value = call.headers.get("cache-control")
    if not value:
        return False, False
    directives = {part.strip().lower() for part in value.split(",")}
    return "no-cache" in directives, "no-store" in directives


@dataclass(slots=True)
class Ticket:
    """One request's use of the cache; `finish()` must be called on a miss (it is idempotent)."""

    status: CacheStatus
    hit: Replay | None = None
    """On a hit, the stored entry as the request asks for it (`Codec.replay`)."""
    _finish: Callable[[bytes | None], None] | None = None

    def finish(self, stored: bytes | None) -> None:
        """Store `stored` (an entry from `Codec.stored`) when the rule writes, and release any waiters."""
        finish, self._finish = self._finish, None
        if finish is not None:
            finish(stored)

    def recording(self, source: AsyncGenerator[bytes, None], codec: Codec[Any]) -> AsyncGenerator[bytes, None]:
        """Pass `source` through; when it ends as a finished stream does (not cut off, no error), finish with it.

        With nothing to finish (a request the cache does not see), `source` itself: no copy of the stream is kept.
        """
        return source if self._finish is None else self._recording(source, codec)

    async def _recording(self, source: AsyncGenerator[bytes, None], codec: Codec[Any]) -> AsyncGenerator[bytes, None]:
        parts: list[bytes] = []
        stored = None
        try:
            async with contextlib.aclosing(source):
                async for events in source:
                    parts.append(events)
                    yield events
            stored = codec.stored_stream(b"".join(parts)) if parts else None
        finally:
            self.finish(stored)


@dataclass(slots=True)
class _Flight:
    """A request on its way to the upstream, which identical requests in this process wait for."""

    landed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when it ends; the keeper of its backend lock, if it took one, then releases the lock."""


@dataclass(frozen=True, slots=True)
class _Plan:
    key: str
    read: bool
    write: bool
    ttl: float
    rule: CacheRule
    namespace: str | None
    """The semantic namespace (the key of the request without its question), when the rule is semantic."""
    question: Question | None
    """The request's question, when a semantic match is planned."""
    codec: Codec[Any]
    stream: bool
    """Whether a hit replays as a stream (else as a completion)."""
    wants_usage: bool
    """Whether a stream hit keeps its usage chunk."""


class AnswerCache:
    """Looks answers up and stores them for the pipeline, with single flight and the semantic option."""

    def __init__(
        self,
        backend: ResponseCache,
        settings: CacheSettings,
        tasks: BackgroundTasks,
        *,
        embedder: Callable[[], Embedder] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self._tasks = tasks
        self._embedder = embedder
        self._clock = clock
        """Time for the waits of single flight and for the lock keepers (the tests pass a fake)."""
        self._flights: dict[str, _Flight] = {}
        self._lease = Lease(seconds=settings.lock_lease, longest=settings.lock_ttl)

    def _plan(
        self, codec: Codec[Any], call: Call[Any], decision: Decision, route: Route, *, stream: bool
    ) -> _Plan | None:
        rule = decision.cache
        if not self.settings.enabled or not rule.enabled:
            return None
        if rule.deterministic_only and not codec.deterministic(call.body):
            return None
        no_cache, no_store = _cache_control(call)
        read, write = rule.read and not no_cache, rule.write and not no_store
        if not (read or write):
            return None
        tenant = f"{call.caller or ''}\x1f{call.credential}"  # the caller's name, and its key's digest

        def key_of(fields: Mapping[str, msgspec.Raw]) -> str:
            return fields_key(
                tenant=tenant,
                route=decision.route,
                model=route.model,
                scope=route.cache_scope,
                fields=fields,
                ignored=codec.ignored_fields,
            )

        key = key_of(call.body.fields)
        namespace = question = None
        if rule.semantic_threshold is not None and self._embedder is not None and call.question.text:
            context = codec.cache_context(call.body)
            if context is not None:
                namespace, question = "sem:" + key_of(context), call.question
        ttl = rule.ttl if rule.ttl is not None else self.settings.ttl
        wants_usage = codec.wants_usage(call.body)
        return _Plan(key, read, write, ttl, rule, namespace, question, codec, stream=stream, wants_usage=wants_usage)

    async def begin(
        self, codec: Codec[Any], call: Call[Any], decision: Decision, route: Route, *, stream: bool = False
    ) -> Ticket:
        """Look `call` up: a hit (replayed as a stream when `stream`, else whole), a miss to finish, a bypass.

        `route` is the decided route; its `model` and `cache_scope` (a RAG route's index version) are keyed.
        """
        plan = self._plan(codec, call, decision, route, stream=stream)
        if plan is None:
            return Ticket(status="bypass")
        flight: _Flight | None = None
        if plan.read:
            stored = await self._read(plan)
            if stored is None and plan.write:
                stored, flight = await self._single_flight(plan)
            if stored is not None:
                return Ticket(status="hit", hit=stored)
        elif plan.write and plan.key not in self._flights:  # readers that come meanwhile wait for this answer
            flight = self._flights[plan.key] = _Flight()
        status: CacheStatus = "miss" if plan.read else "bypass"
        return Ticket(status=status, _finish=lambda stored: self._finish(plan, stored, flight))

    async def _get(self, key: str, plan: _Plan) -> Replay | None:
        """The entry under `key` replayed as `plan` asks; None when there is none or it cannot be replayed (it goes)."""
        stored = await self.backend.get(key)
        if stored is None:
            return None
        try:
            return plan.codec.replay(stored, stream=plan.stream, wants_usage=plan.wants_usage)
        except UnreadableAnswerError as exc:
            logger.warning("cache: a stored entry cannot be replayed (%s): deleted, answered as a miss", exc)
            await self.backend.delete(key)
            return None

    async def _read(self, plan: _Plan) -> Replay | None:
        stored = await self._get(plan.key, plan)
        if stored is not None:
            return stored
        if plan.namespace is None or plan.question is None or plan.rule.semantic_threshold is None:
            return None
        assert self._embedder is not None  # noqa: S101 - a namespace is only planned with an embedder
        vector = await plan.question.vector(self._embedder())
        records = await self.backend.items(plan.namespace)
        match = best_match(plan.question.text, vector, records, plan.rule.semantic_threshold)
        if match is None:
            return None
        return await self._get(match.key, plan)

    async def _single_flight(self, plan: _Plan) -> tuple[Replay | None, _Flight | None]:
        """Wait for the answer of an identical request already asking, or become the one that asks.

        Returns the answer when another request brought it, else None and, when this request leads
        the flight (others may wait for it), its event; the lock is then held in the backend too.
        A replica's lock is polled for until it goes (answered, released, or its lease lapsed) or for
        `lock_ttl` at most; a poll that cannot reach Redis takes the lock as if it were free.
        """
        local = self._flights.get(plan.key)
        if local is not None:
            await self._clock.wait(local.landed, self.settings.lock_ttl)
            return await self._get(plan.key, plan), None
        flight = self._flights[plan.key] = _Flight()
        if await self._take_lock(plan, flight):
            return await self._recheck(plan, flight)
        # Another replica is asking: poll for its answer, or for its lock to go.
        deadline = self._clock.now() + self.settings.lock_ttl
        while self._clock.now() < deadline:
            await self._clock.sleep(_POLL)
            stored = await self._get(plan.key, plan)
            if stored is not None:
                self._land(plan.key, flight)
                return stored, None
            if await self._take_lock(plan, flight):  # it failed, its lease lapsed, or Redis is unreachable: our turn
                return await self._recheck(plan, flight)
        return None, flight  # it took too long: ask the upstream ourselves, still this process's leader

    async def _take_lock(self, plan: _Plan, flight: _Flight) -> bool:
        """Take the backend lock for `flight`; when taken, a background keeper renews it until the flight lands."""
        held = await self.backend.lock("lock:" + plan.key, self._lease.seconds)
        if held is None:
            return False
        self._tasks.spawn(keep_lock(self.backend, held, self._lease, flight.landed, self._clock), name="cache-lock")
        return True

    async def _recheck(self, plan: _Plan, flight: _Flight) -> tuple[Replay | None, _Flight | None]:
        """With the lock taken, look once more: the last holder may have stored the answer and unlocked since."""
        stored = await self._get(plan.key, plan)
        if stored is None:
            return None, flight
        self._land(plan.key, flight)
        return stored, None

    def _finish(self, plan: _Plan, stored: bytes | None, flight: _Flight | None) -> None:
        if stored is None or not plan.write:
            self._land(plan.key, flight)
            return
        self._tasks.spawn(self._store(plan, stored, flight), name="cache-store")

    async def _store(self, plan: _Plan, stored: bytes, flight: _Flight | None) -> None:
        try:
            if not plan.codec.replayable(stored):  # routes refuse what does not read; this holds for any route
                logger.warning("cache: an answer that would not replay was not stored")
                return
            await self.backend.set(plan.key, stored, plan.ttl)
            if plan.namespace is not None and plan.question is not None and self._embedder is not None:
                vector = await plan.question.vector(self._embedder())
                record = pack(plan.key, plan.question.text, vector)
                await self.backend.push(plan.namespace, record, keep=SEMANTIC_KEEP, ttl=plan.ttl)
        finally:
            self._land(plan.key, flight)

    def _land(self, key: str, flight: _Flight | None) -> None:
        """End this request's flight: wake its waiters, and its lock's keeper, which releases the lock."""
        if flight is None:
            return
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.landed.set()


class SharedCache:
    """The backend and the embedder, built once and kept across policy reloads while the cache block is unchanged."""

    def __init__(self, local_embedder: Callable[[], Embedder], recorder: Recorder | None = None) -> None:
        self._recorder = recorder
        """Told of each failed Redis command."""
        self._settings: CacheSettings | None = None
        self._backend: ResponseCache | None = None
        self._embedder: Embedder | None = None
        self._local_embedder = local_embedder
        """The local model, owned by the app's resources (the RAG path and `similar_to` rules share it)."""
        self._retired: list[ResponseCache] = []

    def answer_cache(self, settings: CacheSettings, tasks: BackgroundTasks, *, semantic: bool) -> AnswerCache:
        """The `AnswerCache` for one generation; `semantic`: some rule matches by meaning (load the embedder)."""
        if self._backend is None or settings != self._settings:
            if self._backend is not None:
                self._retired.append(self._backend)
            self._backend, self._settings = open_backend(settings, self._recorder), settings
            where = f"redis at {redact_url(settings.url)}" if settings.uses_redis else f"memory, {settings.max_bytes} B"
            logger.info("response cache: %s", where)
        if semantic and self._embedder is None:
            self._embedder = self._local_embedder()
        embedder = self._embedder
        return AnswerCache(self._backend, settings, tasks, embedder=(lambda: embedder) if embedder else None)

    async def aclose(self) -> None:
        """Close every backend opened."""
        for backend in [*self._retired, *([self._backend] if self._backend else [])]:
            await backend.aclose()
