"""Every traffic store (an SQLite file, the real PostgreSQL, a JSONL file, a JSONL directory) through the same tests."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from proxy.traffic import Exchange, TrafficStore, open_traffic_store

T0 = 1_796_400_000.25
"""A time (unix seconds) with a fraction, in December 2026."""


@pytest.fixture(params=["sqlite", "postgres", "jsonl-file", "jsonl-dir"])
def traffic_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind (SQLite and JSONL in a directory yet to be made)."""
    kind = request.param
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'traffic.db'}"
    if kind == "jsonl-file":
        return str(tmp_path / "nested" / "traffic.jsonl")
    if kind == "jsonl-dir":
        return f"jsonl:///{tmp_path / 'nested' / 'traffic'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
async def opener(traffic_url: str) -> AsyncIterator[Callable[[], TrafficStore]]:
    """Opens stores at the URL (each its own connections and files); closes them all at the end."""
    opened: list[TrafficStore] = []

    def open_one() -> TrafficStore:
        store = open_traffic_store(traffic_url)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
def store(opener: Callable[[], TrafficStore]) -> TrafficStore:
    return opener()


def exchange(index: int, **fields: Any) -> Exchange:
    values: dict[str, Any] = {
        "request_id": f"req-{index:05d}",
        "at": T0 + index,
        "endpoint": "chat.completions",
        "stream": index % 2 == 1,
        "caller": "alice",
        "team": "ops",
        "route": "gpt4",
        "rule": "default",
        "reason": "catch-all",
        "model": "gpt-4-0613",
        "fallbacks": ("support-ft",),
        "status": 200,
        "error": None,
        "cache": "miss",
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        "cost": Decimal("0.000123456789012345"),
        "baseline": Decimal("0.0042"),
        "savings": Decimal("0.004076543210987655"),
        "latency_ms": 12.345,
        "ttfb_ms": 3.5,
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"question {index} ✓"}]},
        "answer": {"choices": [{"message": {"role": "assistant", "content": "answer", "tool_calls": []}}]},
    }
    return Exchange(**{**values, **fields})


async def read_all(store: TrafficStore, **filters: Any) -> list[Exchange]:
    return [e async for e in store.exchanges(**filters)]


def same(got: Exchange, want: Exchange) -> None:
    """Equal, the time to the microsecond (what the SQL stores keep)."""
    assert got.at == pytest.approx(want.at, abs=1e-6)
    assert dataclasses.replace(got, at=want.at) == want


async def test_an_exchange_reads_back_whole_with_its_content(store: TrafficStore) -> None:
    written = [exchange(1), exchange(2, cache=None, usage=None, cost=None, baseline=None, savings=None, fallbacks=())]
    await store.write(written)
    got = await read_all(store, with_content=True)
    assert len(got) == 2
    for read, want in zip(got, written, strict=True):
        same(read, want)
    assert got[0].cost == Decimal("0.000123456789012345")  # exact, never a float


async def test_without_content_the_request_and_answer_are_left_out(store: TrafficStore) -> None:
    await store.write([exchange(1)])
    [got] = await read_all(store)
    assert got.request is None
    assert got.answer is None
    same(got, exchange(1, request=None, answer=None))
    assert (await store.get("req-00001", with_content=False)) == got
    full = await store.get("req-00001")
    assert full is not None
    assert full.request == exchange(1).request


async def test_exchanges_come_in_time_order_filtered(store: TrafficStore) -> None:
    await store.write([exchange(i, route="gpt4" if i % 3 else "ft", rule=f"r{i % 2}") for i in (5, 1, 4, 2, 3, 0)])
    assert [e.request_id for e in await read_all(store)] == [f"req-{i:05d}" for i in range(6)]
    assert [e.request_id[-1] for e in await read_all(store, since=T0 + 2, until=T0 + 5)] == ["2", "3", "4"]
    assert [e.request_id[-1] for e in await read_all(store, route="ft")] == ["0", "3"]
    assert [e.request_id[-1] for e in await read_all(store, rule="r1", route="gpt4")] == ["1", "5"]
    assert await read_all(store, rule="nope") == []


async def test_equal_times_are_ordered_by_request_id_across_pages(store: TrafficStore) -> None:
    batch = [exchange(i, at=T0 + i // 7, request_id=f"id-{1299 - i:05d}") for i in range(1300)]
    await store.write(batch[:600])
    await store.write(batch[600:])
    got = await read_all(store)
    assert len(got) == 1300
    assert [(e.at, e.request_id) for e in got] == sorted((e.at, e.request_id) for e in got)
    assert len({e.request_id for e in got}) == 1300


async def test_a_repeated_request_id_is_kept_once(store: TrafficStore) -> None:
    await store.write([exchange(1), exchange(1, status=500), exchange(2)])
    await store.write([exchange(2, route="other"), exchange(3)])
    got = await read_all(store)
    assert [(e.request_id, e.status, e.route) for e in got] == [
        ("req-00001", 200, "gpt4"),
        ("req-00002", 200, "gpt4"),
        ("req-00003", 200, "gpt4"),
    ]


async def test_feedback_attaches_to_a_known_exchange_only(store: TrafficStore) -> None:
    await store.write([exchange(1), exchange(2)])
    assert await store.feedback("req-00001", score=0.9, label="good", comment="exactly right") is True
    assert await store.feedback("req-nope", score=1.0, label=None, comment=None) is False
    assert await store.feedback("req-00001", score=None, label="great", comment=None) is True  # None keeps
    got = await store.get("req-00001")
    assert got is not None
    assert (got.score, got.label, got.comment) == (0.9, "great", "exactly right")
    [first, second] = await read_all(store, with_content=True)
    assert (first.score, first.label, first.comment) == (0.9, "great", "exactly right")
    assert (second.score, second.label, second.comment) == (None, None, None)
    assert await store.get("req-nope") is None


async def test_prune_drops_by_age_then_the_oldest_beyond_the_count(store: TrafficStore) -> None:
    await store.write([exchange(i) for i in range(10)])
    assert await store.prune(older_than=T0 + 3, max_rows=None) == 3
    assert await store.prune(older_than=None, max_rows=4) == 3
    assert [e.request_id[-1] for e in await read_all(store)] == ["6", "7", "8", "9"]
    assert await store.prune(older_than=T0, max_rows=10) == 0
    assert await store.feedback("req-00001", score=1.0, label=None, comment=None) is False  # pruned is unknown


async def test_another_store_on_the_same_url_sees_what_was_written(opener: Callable[[], TrafficStore]) -> None:
    first = opener()
    await first.write([exchange(1)])
    assert await first.feedback("req-00001", score=0.5, label=None, comment=None)
    await first.close()
    second = opener()
    [got] = await read_all(second, with_content=True)
    same(got, exchange(1, score=0.5))
    await second.write([exchange(1), exchange(2)])  # the first's id is known to the second too
    assert [e.request_id for e in await read_all(second)] == ["req-00001", "req-00002"]


async def test_odd_content_round_trips(store: TrafficStore) -> None:
    content: dict[str, Any] = {
        "text": 'quotes " and \\ backslashes, \n newlines, emoji 🚀, RTL שלום',
        "nested": [[1, 2.5, None, True], {"deep": {"deeper": []}}],
        "big": 2**62,
    }
    await store.write([exchange(1, request=content, answer={"echo": content}, error="x" * 5000)])
    got = await store.get("req-00001")
    assert got is not None
    assert got.request == content
    assert got.answer == {"echo": content}
    assert got.error == "x" * 5000


async def test_a_nul_character_does_not_lose_the_batch(store: TrafficStore) -> None:
    await store.write([exchange(1, request={"text": "a\x00b"}), exchange(2)])
    got = await store.get("req-00001")
    assert got is not None
    assert got.request is not None
    assert got.request["text"] in ("a\x00b", "a\ufffdb")  # PostgreSQL's JSONB holds no NUL: U+FFFD stands in
    assert await store.get("req-00002") is not None
