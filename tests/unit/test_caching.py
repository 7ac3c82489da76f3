"""`AnswerCache` on its own: the RAG index version in the key, the counts, what bypasses the cache, single flight."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from policies import CacheRule, Decision
from proxy.cache.lookup import AnswerCache
from proxy.cache.memory import MemoryResponseCache
from proxy.config.sections import CacheSettings
from proxy.endpoints.chat_replay import COMPLETION, entry
from proxy.tasks import BackgroundTasks
from proxy.wire.schemas import decode_chat_body
from routes import ChatCall
from tests.manual_clock import ManualClock


@dataclass
class FakeRagRoute:
    """What the cache reads from a route: its name, its upstream model, and a RAG route's index version."""

    name: str
    model: str | None
    index_version: str


def call(content: str = "Hi", **extra: object) -> ChatCall:
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra}).encode()
    return ChatCall(body=decode_chat_body(raw), headers={}, caller="acme")


DECISION = Decision(route="docs", rule="r", reason="test")


async def settle(tasks: BackgroundTasks) -> None:
    await tasks.drain(1.0)
    await asyncio.sleep(0)


async def test_a_new_knowledge_index_version_is_a_miss() -> None:
    tasks = BackgroundTasks()
    cache = AnswerCache(MemoryResponseCache(1 << 20), CacheSettings(), tasks)
    seen: list[str] = []
    cache.on_count = seen.append
    v1, v2 = FakeRagRoute("docs", "gpt-4", "idx-1"), FakeRagRoute("docs", "gpt-4", "idx-2")
    request = call(temperature=0)
    ticket = await cache.begin(request, DECISION, v1)
    assert ticket.status == "miss"
    ticket.finish(entry(COMPLETION, b'{"id":"x"}'))
    await settle(tasks)
    hit = (await cache.begin(request, DECISION, v1)).hit
    assert hit is not None
    assert hit.body == b'{"id":"x"}'
    second = await cache.begin(request, DECISION, v2)
    assert second.status == "miss"
    second.finish(None)
    await settle(tasks)
    assert cache.counts == {"miss": 2, "hit": 1, "stored": 1}
    assert seen == ["miss", "stored", "hit", "miss"]


async def test_what_bypasses_the_cache() -> None:
    tasks = BackgroundTasks()
    route = FakeRagRoute("docs", None, "idx-1")
    cache = AnswerCache(MemoryResponseCache(1 << 20), CacheSettings(), tasks)
    assert (await cache.begin(call(), DECISION, route)).status == "bypass"  # temperature 1 by default
    assert (await cache.begin(call(temperature=0.2), DECISION, route)).status == "bypass"
    assert (await cache.begin(call(seed=None), DECISION, route)).status == "bypass"
    off = Decision(route="docs", rule="r", reason="test", cache=CacheRule(read=False, write=False))
    assert (await cache.begin(call(temperature=0), off, route)).status == "bypass"
    disabled = AnswerCache(MemoryResponseCache(1 << 20), CacheSettings(enabled=False), tasks)
    assert (await disabled.begin(call(temperature=0), DECISION, route)).status == "bypass"
    loose = Decision(route="docs", rule="r", reason="test", cache=CacheRule(deterministic_only=False))
    ticket = await cache.begin(call(), loose, route)
    assert ticket.status == "miss"
    ticket.finish(None)
    await settle(tasks)


async def test_an_entry_that_cannot_be_replayed_is_a_miss_and_goes_and_such_an_answer_is_never_stored() -> None:
    tasks = BackgroundTasks()
    backend = MemoryResponseCache(1 << 20)
    cache = AnswerCache(backend, CacheSettings(), tasks)
    route = FakeRagRoute("docs", "gpt-4", "idx-1")
    request = call(temperature=0)
    ticket = await cache.begin(request, DECISION, route)
    ticket.finish(entry(COMPLETION, b'{"choices":"abc"}'))  # a route let it through: the store refuses it
    await settle(tasks)
    assert cache.counts == {"miss": 1, "unreadable": 1}
    ticket = await cache.begin(request, DECISION, route, stream=True)
    assert ticket.status == "miss"
    ticket.finish(entry(COMPLETION, b'{"choices":[]}'))
    await settle(tasks)
    (key,) = [key for key in backend._entries if not key.startswith("lock:")]
    await backend.set(key, entry(COMPLETION, b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"), 60)  # another version's

    ticket = await cache.begin(request, DECISION, route, stream=True)

    assert ticket.status == "miss"
    assert await backend.get(key) is None
    assert cache.counts["unreadable"] == 2
    ticket.finish(None)


# --- single flight, on a manual clock ------------------------------------------------------------------------

FLIGHT = CacheSettings(lock_ttl=6.0, lock_lease=1.5)
ANSWER = entry(COMPLETION, b'{"id":"flown"}')


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
    leader = await cache.begin(call(temperature=0), DECISION, ROUTE)
    follower = asyncio.ensure_future(cache.begin(call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_ttl / 2)
    assert not follower.done()

    leader.finish(ANSWER)
    await clock.advance(0)

    waited = await follower
    assert (leader.status, waited.status) == ("miss", "hit")
    assert waited.hit is not None
    assert waited.hit.body == b'{"id":"flown"}'
    assert cache.counts == {"miss": 1, "flight_wait": 1, "stored": 1, "hit": 1}
    await tasks.drain(0)


@pytest.mark.parametrize("where", ["this process", "another replica"])
async def test_a_waiter_gives_up_after_lock_ttl_and_asks_the_upstream_itself(where: str) -> None:
    clock, backend = flight()
    (first, first_tasks), (second, second_tasks) = replica(backend, clock), replica(backend, clock)
    waiter = first if where == "this process" else second
    leader = await first.begin(call(temperature=0), DECISION, ROUTE)  # alive, renewing, its upstream call never ends
    waiting = asyncio.ensure_future(waiter.begin(call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_ttl - 0.05)
    assert not waiting.done()
    assert len(await locks(backend)) == 1  # renewed all along: without renewals it would have lapsed after 1.5 s

    await clock.advance(0.1)

    gave_up = await waiting
    assert gave_up.status == "miss"
    assert waiter.counts["flight_wait"] == 1
    gave_up.finish(None)
    leader.finish(None)
    await first_tasks.drain(0)
    await second_tasks.drain(0)


async def test_a_replica_polls_for_the_answer_of_the_one_holding_the_lock() -> None:
    clock, backend = flight()
    (first, first_tasks), (second, second_tasks) = replica(backend, clock), replica(backend, clock)
    leader = await first.begin(call(temperature=0), DECISION, ROUTE)
    polling = asyncio.ensure_future(second.begin(call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_lease * 2)  # past the first lease: the leader's keeper renews its lock
    assert not polling.done()

    leader.finish(ANSWER)
    await clock.advance(0.1)

    waited = await polling
    assert waited.status == "hit"
    assert second.counts == {"flight_wait": 1, "hit": 1}
    assert await locks(backend) == []  # the leader's keeper released its lock when the answer landed
    await first_tasks.drain(0)
    await second_tasks.drain(0)


async def test_a_replica_takes_over_within_a_lease_when_the_lock_holder_dies() -> None:
    clock, backend = flight()
    (first, first_tasks), (second, second_tasks) = replica(backend, clock), replica(backend, clock)
    await first.begin(call(temperature=0), DECISION, ROUTE)
    await first_tasks.drain(0)  # the first replica dies: its keeper stops renewing, its lock stays until its lease ends
    polling = asyncio.ensure_future(second.begin(call(temperature=0), DECISION, ROUTE))
    await clock.advance(FLIGHT.lock_lease - 0.05)
    assert not polling.done()

    await clock.advance(0.1)

    took_over = await polling
    assert took_over.status == "miss"  # the second asks the upstream now, long before lock_ttl
    took_over.finish(ANSWER)
    await clock.advance(0)
    assert second.counts == {"flight_wait": 1, "miss": 1, "stored": 1}
    assert (await first.begin(call(temperature=0), DECISION, ROUTE)).status == "hit"
    await second_tasks.drain(0)


async def test_an_answer_lives_as_long_as_its_rule_says_on_the_backends_clock() -> None:
    clock, backend = flight()
    cache, tasks = replica(backend, clock)
    short = Decision(route="docs", rule="r", reason="test", cache=CacheRule(ttl=10.0))
    ticket = await cache.begin(call(temperature=0), short, ROUTE)
    ticket.finish(ANSWER)
    await clock.advance(9.9)
    assert (await cache.begin(call(temperature=0), short, ROUTE)).status == "hit"

    await clock.advance(0.1)

    expired = await cache.begin(call(temperature=0), short, ROUTE)
    assert expired.status == "miss"
    expired.finish(None)
    await tasks.drain(0)
