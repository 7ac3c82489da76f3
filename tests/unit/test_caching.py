"""`AnswerCache` on its own: the RAG index version in the key, what is stored, and what bypasses the cache."""

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
