"""Where each stored response lives: the response id → upstream (and route) map, in memory or in Redis.

The Responses API keeps state upstream: a response OpenAI stored can be continued (`previous_response_id`),
retrieved, deleted, listed (`input_items`) and cancelled only on the upstream that made it. Turnout
routes each request by its own policy, across upstreams, so it remembers for every response id it relays
(a whole `Response`, or a stream's `response.created`) the upstream and the route that answered it, and:

- a `POST /v1/responses` with `previous_response_id` goes to a route on that upstream: the decided one when it
  is there, else the route that answered before (`ResponseHomes.steer`);
- `GET`/`DELETE /v1/responses/{id}`, `input_items` and `cancel` go to that upstream (the default upstream for
  an id Turnout never relayed).

Every replica must see the same map: with a Redis configured for the response cache (`cache.url`), the map
lives there, under `{cache.key_prefix}:response:{id}` with a 30-day TTL (OpenAI keeps responses 30 days);
else it is in memory, bounded (`MEMORY_ENTRIES`, the oldest forgotten first). Redis trouble never fails a
request: a failed read is "unknown" (the default route or upstream), a failed write is logged.
A response not stored (`store: false`) is not remembered: nothing upstream could be found by its id.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import msgspec

from policies import Decision
from proxy.asgi import ClosableChunks
from proxy.config.sections import CacheSettings
from proxy.outcome import Outcome
from proxy.pipeline import Steer
from proxy.wire.redisurl import redact_url
from proxy.wire.sse import event_data, split_events
from routes import Route, Upstream

__all__ = [
    "MEMORY_ENTRIES",
    "TTL_SECONDS",
    "Home",
    "HomeMap",
    "MemoryHomes",
    "RedisHomes",
    "ResponseHomes",
    "open_homes",
    "upstream_of",
]

logger = logging.getLogger("turnout.responses")

MEMORY_ENTRIES = 100_000
"""Response ids kept in memory (about 20 MB at most)."""
TTL_SECONDS = 30 * 24 * 3600
"""How long a response id is remembered in Redis: as long as OpenAI keeps a stored response."""


class Home(NamedTuple):
    """Where a response lives: the upstream that holds it, and the route that answered it there."""

    upstream: str
    route: str


class HomeMap(Protocol):
    """The response id → `Home` store (memory or Redis)."""

    async def remember(self, response_id: str, home: Home) -> None:
        """Keep `response_id`'s home (a failure is logged, never raised)."""
        ...

    async def find(self, response_id: str) -> Home | None:
        """`response_id`'s home, or None (unknown, or the store unreachable)."""
        ...

    async def forget(self, response_id: str) -> None:
        """Drop `response_id` (it was deleted upstream)."""
        ...

    async def aclose(self) -> None:
        """Release the connections."""
        ...


class MemoryHomes:
    """The map in this process, bounded: the oldest ids are forgotten first."""

    def __init__(self, limit: int = MEMORY_ENTRIES) -> None:
        self._homes: OrderedDict[str, Home] = OrderedDict()
        self._limit = limit

    async def remember(self, response_id: str, home: Home) -> None:
        """Keep it (as the newest)."""
        self._homes[response_id] = home
        self._homes.move_to_end(response_id)
        while len(self._homes) > self._limit:
            self._homes.popitem(last=False)

    async def find(self, response_id: str) -> Home | None:
        """Its home, if remembered."""
        return self._homes.get(response_id)

    async def forget(self, response_id: str) -> None:
        """Drop it."""
        self._homes.pop(response_id, None)

    async def aclose(self) -> None:
        """Nothing to release."""


_HOME = msgspec.json.Decoder(tuple[str, str])


class RedisHomes:
    """The map in the deployment's Redis, which every replica shares: `{prefix}:response:{id}` → `[upstream, route]`."""

    def __init__(self, settings: CacheSettings, *, ttl: int = TTL_SECONDS) -> None:
        if settings.url is None:
            raise ValueError("the redis map needs a url")
        from proxy.cache.redis import FAILURES, redis_client  # only with Redis: redis-py is slow to import

        self._failures = FAILURES
        self._client = redis_client(settings.url, settings)  # the response cache's bounds and failure rules
        self._prefix = f"{settings.key_prefix}:response:"
        self._ttl = ttl
        self._where = redact_url(settings.url)

    async def remember(self, response_id: str, home: Home) -> None:
        """SET with the TTL."""
        try:
            await self._client.set(self._prefix + response_id, msgspec.json.encode(tuple(home)), ex=self._ttl)
        except self._failures as exc:
            logger.warning("could not remember response %s in redis at %s: %s", response_id, self._where, exc)

    async def find(self, response_id: str) -> Home | None:
        """GET (None when Redis fails: the request goes where an unknown id goes)."""
        try:
            value = await self._client.get(self._prefix + response_id)
        except self._failures as exc:
            logger.warning("could not look response %s up in redis at %s: %s", response_id, self._where, exc)
            return None
        if value is None:
            return None
        try:
            return Home(*_HOME.decode(value))
        except (msgspec.DecodeError, TypeError):
            return None

    async def forget(self, response_id: str) -> None:
        """DEL."""
        try:
            await self._client.delete(self._prefix + response_id)
        except self._failures as exc:
            logger.warning("could not forget response %s in redis at %s: %s", response_id, self._where, exc)

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose(close_connection_pool=True)


def open_homes(cache: CacheSettings) -> HomeMap:
    """The map where the response cache is shared: Redis when the cache names one, else this process's memory."""
    return RedisHomes(cache) if cache.uses_redis else MemoryHomes()


def upstream_of(route: Route) -> Upstream | None:
    """The upstream a route's answers come from: its own, or its answering route's (a RAG route's)."""
    seen: Any = route
    for _ in range(8):  # routes compose a level or two deep
        upstream = getattr(seen, "upstream", None)
        if isinstance(upstream, Upstream):
            return upstream
        seen = getattr(seen, "answer_with", None)
        if seen is None:
            return None
    return None


class _Event(msgspec.Struct):
    class _Response(msgspec.Struct):
        id: str | None = None

    type: str | None = None
    response: _Response | None = None
    id: str | None = None


_EVENT = msgspec.json.Decoder(_Event)


def response_id(data: bytes) -> str | None:
    """The id of a `Response` body, or of the response a `response.created` event carries."""
    try:
        read = _EVENT.decode(data)
    except msgspec.DecodeError:
        return None
    if read.type == "response.created" and read.response is not None:
        return read.response.id
    return read.id if read.type is None else None


@dataclass(frozen=True, slots=True)
class ResponseHomes:
    """The map, with what the Responses handlers do with it."""

    homes: HomeMap

    async def steer(self, routes: Mapping[str, Route], previous: str | None) -> Steer | None:
        """For a request continuing `previous`: keep the decision on its upstream (None: nothing to steer)."""
        if previous is None:
            return None
        home = await self.homes.find(previous)
        if home is None:
            return None

        def on_home(name: str) -> bool:
            upstream = upstream_of(routes[name]) if name in routes else None
            return upstream is not None and upstream.name == home.upstream

        def steered(decision: Decision) -> Decision:
            if on_home(decision.route):
                fallbacks = tuple(name for name in decision.fallbacks if on_home(name))
                shadow = decision.shadow if decision.shadow is not None and on_home(decision.shadow) else None
                return replace(decision, fallbacks=fallbacks, shadow=shadow)
            others = [name for name in routes if on_home(name) and "responses" in routes[name].endpoints]
            route = home.route if home.route in others else (others[0] if others else None)
            if route is None:  # the upstream is gone from the policy: the decision stands (the upstream says 404)
                return decision
            reason = f"previous_response_id {previous} is held by upstream '{home.upstream}'"
            return replace(decision, route=route, reason=reason, fallbacks=(), shadow=None)

        return steered

    async def answered(self, routes: Mapping[str, Route], outcome: Outcome, body: bytes) -> None:
        """Remember the id of a whole `Response` the route `outcome.route` answered."""
        found = response_id(body)
        if found is not None:
            await self.remember(routes, outcome, found)

    async def remember(self, routes: Mapping[str, Route], outcome: Outcome, found: str) -> None:
        """Remember that `found` lives on the upstream of the route that answered (`outcome.route`)."""
        route = routes.get(outcome.route)
        upstream = upstream_of(route) if route is not None else None
        if upstream is not None:
            await self.homes.remember(found, Home(upstream.name, outcome.route))

    def relayed(self, routes: Mapping[str, Route], outcome: Outcome, relay: ClosableChunks) -> ClosableChunks:
        """`relay`, remembering the id of its `response.created` event before that event goes out."""
        return _Remembering(self, routes, outcome, relay)


class _Remembering:
    """A relay that remembers the response id its stream announces (the chunks pass unchanged)."""

    __slots__ = ("_homes", "_outcome", "_relay", "_routes")

    def __init__(
        self, homes: ResponseHomes, routes: Mapping[str, Route], outcome: Outcome, relay: ClosableChunks
    ) -> None:
        self._homes, self._routes, self._outcome, self._relay = homes, routes, outcome, relay

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        looking = True
        async for chunk in self._relay:
            if looking and b"response.created" in chunk:
                for event in split_events(chunk):
                    found = response_id(event_data(event) or b"")
                    if found is not None:
                        await self._homes.remember(self._routes, self._outcome, found)
                        looking = False
                        break
            yield chunk

    async def aclose(self) -> None:
        """Close the relay (and with it the upstream's stream)."""
        await self._relay.aclose()
