"""The key ring and the ledger over a real SQLite file: lookups, reloads on a version change, outages, batching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.auth.keyring import KeyRing
from proxy.auth.ledger import Ledger
from proxy.auth.operations import create_key, revoke_key
from proxy.auth.sqlite import SqliteDatabase
from proxy.auth.store import DatabaseError, SpendEntry
from proxy.tasks import BackgroundTasks
from tests.rawhttp import eventually

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class FlakyDatabase(SqliteDatabase):
    """An SQLite database whose polls and writes can be made to fail, as an unreachable server's do."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failing = False
        self.batches: list[int] = []

    async def keys_version(self) -> int:
        if self.failing:
            raise DatabaseError("down")
        return await super().keys_version()

    async def record_spend(self, entries: Sequence[SpendEntry]) -> None:
        if self.failing:
            raise DatabaseError("down")
        self.batches.append(len(entries))
        await super().record_spend(entries)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[FlakyDatabase]:
    db = FlakyDatabase(tmp_path / "turnout.db")
    await db.open()
    yield db
    await db.close()


@pytest.fixture
async def tasks() -> AsyncIterator[BackgroundTasks]:
    running = BackgroundTasks()
    yield running
    await running.drain(5)


def spend(cost: str, n: int = 0) -> SpendEntry:
    return SpendEntry(NOW, "alice", "ops", "gpt4", "chat", "gpt-4", Decimal(cost), 1, 2, False, f"req-{n}")


async def test_find_knows_active_keys_only(database: FlakyDatabase, tasks: BackgroundTasks) -> None:
    _, alice = await create_key(database, "alice", team="ops")
    _, bob = await create_key(database, "bob")
    _, gone = await create_key(database, "gone")
    await revoke_key(database, "gone")
    wall = [NOW.timestamp()]
    _, soon = await create_key(database, "soon", expires_at=NOW + timedelta(seconds=10), now=NOW)
    ring = KeyRing(database, refresh=60, wall_clock=lambda: wall[0])
    await ring.start(tasks)
    try:
        found = ring.find(alice.encode())
        assert found is not None
        assert (found.name, found.team) == ("alice", "ops")
        assert ring.find(bob.encode()) is not None
        assert ring.find(gone.encode()) is None
        assert ring.find(alice[:-1].encode()) is None
        assert ring.find(b"") is None
        assert ring.find(soon.encode()) is not None
        wall[0] += 10
        assert ring.find(soon.encode()) is None  # expired: no reload needed
        assert len(ring) == 3
    finally:
        await ring.close()


async def test_a_revocation_is_picked_up_by_the_next_refresh(database: FlakyDatabase) -> None:
    _, alice = await create_key(database, "alice")
    ring = KeyRing(database, refresh=60)
    assert await ring.refresh() is True
    assert await ring.refresh() is False  # version unchanged: nothing read but one number
    await revoke_key(database, "alice")
    assert ring.find(alice.encode()) is not None
    assert await ring.refresh() is True
    assert ring.find(alice.encode()) is None


async def test_the_poll_reloads_on_its_own(database: FlakyDatabase, tasks: BackgroundTasks) -> None:
    ring = KeyRing(database, refresh=0.01)
    await ring.start(tasks)
    try:
        _, alice = await create_key(database, "alice")
        await eventually(lambda: ring.find(alice.encode()) is not None)
    finally:
        await ring.close()


async def test_a_failing_poll_keeps_the_keys_and_logs_once(
    database: FlakyDatabase, tasks: BackgroundTasks, caplog: pytest.LogCaptureFixture
) -> None:
    _, alice = await create_key(database, "alice")
    ring = KeyRing(database, refresh=0.01)
    await ring.start(tasks)
    try:
        database.failing = True
        caplog.set_level(logging.INFO, logger="turnout.auth")
        await eventually(lambda: any("cannot read the keys" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.1)  # several more failed polls
        assert ring.find(alice.encode()) is not None
        database.failing = False
        await eventually(lambda: any("answers again" in r.getMessage() for r in caplog.records))
    finally:
        await ring.close()
    warnings = [r for r in caplog.records if "cannot read the keys" in r.getMessage()]
    assert len(warnings) == 1
    assert alice not in caplog.text


async def test_a_first_load_that_fails_raises(database: FlakyDatabase, tasks: BackgroundTasks) -> None:
    database.failing = True
    with pytest.raises(DatabaseError):
        await KeyRing(database).start(tasks)


async def test_the_ledger_writes_in_batches_and_close_flushes_all(
    database: FlakyDatabase, tasks: BackgroundTasks
) -> None:
    ledger = Ledger(database, batch=3, interval=60)
    await ledger.start(tasks)
    for n in range(3):
        assert ledger.add(spend("0.000001", n))
    await eventually(lambda: ledger.written == 3)  # a full batch goes at once, without waiting for the interval
    assert ledger.add(spend("0.000002", 3))
    assert database.batches == [3]
    await ledger.close()
    assert database.batches == [3, 1]
    assert await database.spent(since=NOW) == Decimal("0.000005")
    assert ledger.pending == 0


async def test_a_failed_write_is_kept_and_retried(database: FlakyDatabase, tasks: BackgroundTasks) -> None:
    ledger = Ledger(database, batch=100, interval=0.01)
    await ledger.start(tasks)
    database.failing = True
    ledger.add(spend("1", 1))
    ledger.add(spend("2", 2))
    await asyncio.sleep(0.05)  # a few failed attempts
    assert ledger.pending == 2
    database.failing = False
    await eventually(lambda: ledger.pending == 0)
    await ledger.close()
    assert await database.spent(since=NOW) == Decimal(3)


async def test_a_full_queue_drops_and_counts(database: FlakyDatabase) -> None:
    ledger = Ledger(database, batch=100, interval=60, max_queue=2)
    assert ledger.add(spend("1", 1))
    assert ledger.add(spend("1", 2))
    assert not ledger.add(spend("1", 3))
    assert ledger.dropped == 1
    await ledger.close()  # never started: close still writes what was queued
    assert await database.spent(since=NOW) == Decimal(2)


async def test_close_keeps_trying_within_its_grace(database: FlakyDatabase) -> None:
    ledger = Ledger(database, batch=100, interval=0.01)
    database.failing = True
    ledger.add(spend("1", 1))
    closing = asyncio.ensure_future(ledger.close(grace=30))
    await asyncio.sleep(0.05)  # a few attempts fail meanwhile
    assert not closing.done()
    database.failing = False
    await closing
    assert await database.spent(since=NOW) == Decimal(1)


async def test_close_gives_up_after_its_grace_and_says_how_many_were_lost(
    database: FlakyDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(database, batch=100, interval=0.01)
    database.failing = True
    ledger.add(spend("1", 1))
    ledger.add(spend("1", 2))
    await ledger.close(grace=0.05)
    assert "2 spend entries could not be written" in caplog.text
    assert ledger.pending == 2


def test_an_entry_without_a_time_zone_is_refused_not_queued(database: FlakyDatabase) -> None:
    ledger = Ledger(database)
    naive = SpendEntry(NOW.replace(tzinfo=None), "alice", None, None, "chat", None, Decimal(1), 1, 1, False, "r")
    assert not ledger.add(naive)
    assert (ledger.dropped, ledger.pending) == (1, 0)
