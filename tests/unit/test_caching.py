"""`AnswerCache` on its own: the RAG index version in the key, what is stored and bypassed, single flight."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import pytest

from policies import CacheRule, Decision
from proxy.cache.lookup import AnswerCache
from proxy.cache.memory import MemoryResponseCache
from proxy.config.sections import CacheSettings
from proxy.endpoints.chat import CHAT
from proxy.tasks import BackgroundTasks
from routes import Answer, AnswerStream, Call, ChatCall
from tests.manual_clock import ManualClock


@dataclass
class FakeRagRoute:
    """What the cache reads from a route: its name, its upstream model, and a RAG route's index version."""

    name: str
    model: str | None
    cache_scope: str
    endpoints = frozenset({"chat"})

    async def complete(self, call: ChatCall) -> Answer:
        raise AssertionError("the cache never calls a route")

    async def stream(self, call: ChatCall) -> AnswerStream:
        raise AssertionError("the cache never calls a route")


def call(content: str = "Hi", **extra: object) -> ChatCall:
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra}).encode()
    return Call(endpoint=CHAT, body=CHAT.decode(raw), headers={}, caller="acme")


DECISION = Decision(route="docs", rule="r", reason="test")


async def settle(tasks: BackgroundTasks) -> None:
    await tasks.drain(1.0)
    await asyncio.sleep(0)


def stored_keys(backend: MemoryResponseCache) -> list[str]:
    """The answers' keys in the backend (single-flight locks left out)."""
    return [key for key in backend._entries if not key.startswith("lock:")]


async def test_a_new_knowledge_index_version_is_a_miss() -> None:
    tasks = BackgroundTasks()
    backend = MemoryResponseCache(1 << 20)
    cache = AnswerCache(backend, CacheSettings(), tasks)
    v1, v2 = FakeRagRoute("docs", "gpt-4", "idx-1"), FakeRagRoute("docs", "gpt-4", "idx-2")
    request = call(temperature=0)
    ticket = await cache.begin(CHAT, request, DECISION, v1)
    assert ticket.status == "miss"
    ticket.finish(CHAT.stored(b'{"id":"x"}'))
    await settle(tasks)
    hit = (await cache.begin(CHAT, request, DECISION, v1)).hit
    assert hit is not None
    assert hit.body == b'{"id":"x"}'
    second = await cache.begin(CHAT, request, DECISION, v2)
    assert second.status == "miss"
    second.finish(None)
    await settle(tasks)
    assert len(stored_keys(backend)) == 1  # the second miss finished without an answer to store


async def test_what_bypasses_the_cache() -> None:
    tasks = BackgroundTasks()
    route = FakeRagRoute("docs", None, "idx-1")
    cache = AnswerCache(MemoryResponseCache(1 << 20), CacheSettings(), tasks)
    assert (await cache.begin(CHAT, call(), DECISION, route)).status == "bypass"  # temperature 1 by default
    assert (await cache.begin(CHAT, call(temperature=0.2), DECISION, route)).status == "bypass"
    assert (await cache.begin(CHAT, call(seed=None), DECISION, route)).status == "bypass"
    off = Decision(route="docs", rule="r", reason="test", cache=CacheRule(read=False, write=False))
    assert (await cache.begin(CHAT, call(temperature=0), off, route)).status == "bypass"
    disabled = AnswerCache(MemoryResponseCache(1 << 20), CacheSettings(enabled=False), tasks)
    assert (await disabled.begin(CHAT, call(temperature=0), DECISION, route)).status == "bypass"
    loose = Decision(route="docs", rule="r", reason="test", cache=CacheRule(deterministic_only=False))
    ticket = await cache.begin(CHAT, call(), loose, route)
    assert ticket.status == "miss"
    ticket.finish(None)
    await settle(tasks)


async def test_an_entry_that_cannot_be_replayed_is_a_miss_and_goes_and_such_an_answer_is_never_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="turnout.cache")
    tasks = BackgroundTasks()
    backend = MemoryResponseCache(1 << 20)
    cache = AnswerCache(backend, CacheSettings(), tasks)
    route = FakeRagRoute("docs", "gpt-4", "idx-1")
    request = call(temperature=0)
    ticket = await cache.begin(CHAT, request, DECISION, route)
    ticket.finish(CHAT.stored(b'{"choices":"abc"}'))  # a route let it through: the store refuses it
    await settle(tasks)
    assert stored_keys(backend) == []
    assert "an answer that would not replay was not stored" in caplog.text
    ticket = await cache.begin(CHAT, request, DECISION, route, stream=True)
    assert ticket.status == "miss"
    ticket.finish(CHAT.stored(b'{"choices":[]}'))
    await settle(tasks)
    (key,) = stored_keys(backend)
    await backend.set(key, CHAT.stored(b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"), 60)  # another version's

    ticket = await cache.begin(CHAT, request, DECISION, route, stream=True)

    assert ticket.status == "miss"
    assert await backend.get(key) is None
    assert "a stored entry cannot be replayed" in caplog.text
    ticket.finish(None)


# --- single flight, on a manual clock ------------------------------------------------------------------------

FLIGHT = CacheSettings(lock_ttl=6.0, lock_lease=1.5)
ANSWER = CHAT.stored(b'{"id":"flown"}')


def replica(backend: MemoryResponseCache, clock: ManualClock) -> tuple[AnswerCache, BackgroundTasks]:
    """One replica's cache on the shared `backend`, with its own tasks (its lock keepers, its stores)."""
    tasks = BackgroundTasks()
    return AnswerCache(backend, FLIGHT, tasks, clock=clock), tasks


def flight() -> tuple[ManualClock, MemoryResponseCache]:
    clock = ManualClock()
    return clock, MemoryResponseCache(1 << 20, clock=clock.now)


async def locks(backend: MemoryResponseCache) -> list[str]:
    """The single-flight locks live in `backend` now."""
    return [key for key in list(backend._entries) if key.startswith("lock:") and await backend.get(key) is not None]


ROUTE = FakeRagRoute("docs", "gpt-4", "idx-1")


async def test_identical_misses_in_one_process_wait_for_the_first_answer() -> None:
    clock, backend = flight()
    cache, tasks = replica(backend, clock)
    leader = await cache.begin(CHAT, call(temperature=0), DECISION, ROUTE)
    follower = asyncio.ensure_future(cache.begin(CHAT, call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_ttl / 2)
    assert not follower.done()

    leader.finish(ANSWER)
    await clock.advance(0)

    waited = await follower
    assert (leader.status, waited.status) == ("miss", "hit")
    assert waited.hit is not None
    assert waited.hit.body == b'{"id":"flown"}'
    assert len(stored_keys(backend)) == 1  # stored once, for both
    await tasks.drain(0)


@pytest.mark.parametrize("where", ["this process", "another replica"])
async def test_a_waiter_gives_up_after_lock_ttl_and_asks_the_upstream_itself(where: str) -> None:
    clock, backend = flight()
    (first, first_tasks), (second, second_tasks) = replica(backend, clock), replica(backend, clock)
    waiter = first if where == "this process" else second
    # The leader stays alive and renews its lock; its upstream call never ends.
    leader = await first.begin(CHAT, call(temperature=0), DECISION, ROUTE)
    waiting = asyncio.ensure_future(waiter.begin(CHAT, call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_ttl - 0.05)
    assert not waiting.done()
    assert len(await locks(backend)) == 1  # renewed all along: without renewals it would have lapsed after 1.5 s

    await clock.advance(0.1)

    gave_up = await waiting
    assert gave_up.status == "miss"
    gave_up.finish(None)
    leader.finish(None)
    await first_tasks.drain(0)
    await second_tasks.drain(0)


async def test_a_replica_polls_for_the_answer_of_the_one_holding_the_lock() -> None:
    clock, backend = flight()
    (first, first_tasks), (second, second_tasks) = replica(backend, clock), replica(backend, clock)
    leader = await first.begin(CHAT, call(temperature=0), DECISION, ROUTE)
    polling = asyncio.ensure_future(second.begin(CHAT, call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_lease * 2)  # past the first lease: the leader's keeper renews its lock
    assert not polling.done()

    leader.finish(ANSWER)
    await clock.advance(0.1)

    waited = await polling
    assert waited.status == "hit"
    assert await locks(backend) == []  # the leader's keeper released its lock when the answer landed
    await first_tasks.drain(0)
    await second_tasks.drain(0)


async def test_a_replica_takes_over_within_a_lease_when_the_lock_holder_dies() -> None:
    clock, backend = flight()
    (first, first_tasks), (second, second_tasks) = replica(backend, clock), replica(backend, clock)
    await first.begin(CHAT, call(temperature=0), DECISION, ROUTE)
    await first_tasks.drain(0)  # the first replica dies: its keeper stops renewing, its lock stays until its lease ends
    polling = asyncio.ensure_future(second.begin(CHAT, call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_lease - 0.05)
    assert not polling.done()

    await clock.advance(0.1)

    took_over = await polling
    assert took_over.status == "miss"  # the second asks the upstream now, long before lock_ttl
    took_over.finish(ANSWER)
    await clock.advance(0)
    assert len(stored_keys(backend)) == 1
    assert (await first.begin(CHAT, call(temperature=0), DECISION, ROUTE)).status == "hit"
    await second_tasks.drain(0)


async def test_an_answer_lives_as_long_as_its_rule_says_on_the_backends_clock() -> None:
    clock, backend = flight()
    cache, tasks = replica(backend, clock)
    short = Decision(route="docs", rule="r", reason="test", cache=CacheRule(ttl=10.0))
    ticket = await cache.begin(CHAT, call(temperature=0), short, ROUTE)
    ticket.finish(ANSWER)
    await clock.advance(9.9)
    assert (await cache.begin(CHAT, call(temperature=0), short, ROUTE)).status == "hit"

    await clock.advance(0.1)

    expired = await cache.begin(CHAT, call(temperature=0), short, ROUTE)
    assert expired.status == "miss"
    expired.finish(None)
    await tasks.drain(0)
