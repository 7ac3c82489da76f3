"""`AnswerCache` on its own: the RAG index version in the key, the counts, and what bypasses the cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from policies import CacheRule, Decision
from proxy.cache.lookup import AnswerCache
from proxy.cache.memory import MemoryResponseCache
from proxy.config.sections import CacheSettings
from proxy.endpoints.chat_replay import COMPLETION, entry
from proxy.tasks import BackgroundTasks
from proxy.wire.schemas import decode_chat_body
from proxy.wire.sse import DONE_EVENT
from routes import ChatCall, Completion


@dataclass
class FakeRagRoute:
    """What the cache reads from a route: its name, its upstream model, and a RAG route's index version."""

    name: str
    model: str | None
    cache_scope: str
    endpoints: frozenset[str] = frozenset({"chat"})

    async def complete(self, call: ChatCall) -> Completion:
        return Completion(body=b'{"id":"x"}', model=self.model, usage=None)

    async def stream(self, call: ChatCall) -> AsyncGenerator[bytes, None]:
        yield DONE_EVENT


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
