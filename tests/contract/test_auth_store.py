"""Both databases of keys and spend (an SQLite file, the real PostgreSQL) through the same tests."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.auth.keys import KeyRecord, digest_of, new_key
from proxy.auth.operations import create_key
from proxy.auth.store import Database, KeyExistsError, SpendEntry, UsageRow, open_database

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
async def opener(auth_database_url: str) -> AsyncIterator[Callable[[], Database]]:
    """Opens databases at the URL (each a new connection); closes them all at the end."""
    opened: list[Database] = []

    def open_one() -> Database:
        database = open_database(auth_database_url)
        opened.append(database)
        return database

    yield open_one
    for database in opened:
        await database.close()


@pytest.fixture
async def database(opener: Callable[[], Database]) -> Database:
    db = opener()
    await db.open()
    return db


def record(name: str, **fields: object) -> KeyRecord:
    key = new_key()
    defaults: dict[str, object] = {"digest": digest_of(key.encode()), "prefix": key[:8], "created_at": NOW}
    return KeyRecord(name=name, **{**defaults, **fields})  # type: ignore[arg-type]


def entry(
    key: str, cost: str, *, at: datetime = NOW, team: str | None = "ops", route: str | None = "gpt4"
) -> SpendEntry:
    return SpendEntry(
        at=at,
        key=key,
        team=team,
        route=route,
        endpoint="chat",
        model="gpt-4",
        cost_usd=Decimal(cost),
        input_tokens=10,
        output_tokens=5,
        cache_hit=False,
        request_id=f"req-{key}-{cost}-{at.timestamp()}",
    )


async def test_a_created_key_reads_back_as_it_was_made(database: Database) -> None:
    made = record(
        "alice",
        team="ops",
        routes=("gpt4", "rag"),
        models=("gpt-4*", "text-embedding-3-small"),
        rpm=60,
        tpm=10_000,
        budget_usd=Decimal("12.345678"),
        period="day",
        expires_at=NOW + timedelta(days=30),
    )
    await database.create_key(made)
    assert await database.key("alice") == made
    assert await database.key("nobody") is None
    assert await database.keys() == [made]


async def test_keys_are_listed_by_name_revoked_included(database: Database) -> None:
    for name in ("carol", "alice", "bob"):
        await database.create_key(record(name))
    assert await database.revoke("bob", NOW)
    keys = await database.keys()
    assert [k.name for k in keys] == ["alice", "bob", "carol"]
    assert [k.revoked_at for k in keys] == [None, NOW, None]


async def test_a_name_is_never_reused_not_even_after_revocation(database: Database) -> None:
    await database.create_key(record("alice"))
    with pytest.raises(KeyExistsError):
        await database.create_key(record("alice"))
    await database.revoke("alice", NOW)
    with pytest.raises(KeyExistsError):
        await database.create_key(record("alice"))
    assert len(await database.keys()) == 1


async def test_revoke_says_whether_it_revoked(database: Database) -> None:
    await database.create_key(record("alice"))
    assert await database.revoke("alice", NOW) is True
    assert await database.revoke("alice", NOW + timedelta(hours=1)) is False
    assert await database.revoke("nobody", NOW) is False
    revoked = await database.key("alice")
    assert revoked is not None
    assert revoked.revoked_at == NOW
    assert not revoked.active(NOW + timedelta(seconds=1))


async def test_the_keys_version_grows_on_every_create_and_revoke_only(database: Database) -> None:
    first = await database.keys_version()
    await database.create_key(record("alice"))
    created = await database.keys_version()
    assert created > first
    await database.record_spend([entry("alice", "1")])
    assert await database.keys_version() == created
    await database.revoke("alice", NOW)
    revoked = await database.keys_version()
    assert revoked > created
    assert not await database.revoke("alice", NOW)
    with pytest.raises(KeyExistsError):
        await database.create_key(record("alice"))
    assert await database.keys_version() == revoked  # nothing changed, nothing to reload


async def test_spend_sums_exactly_to_the_micro_dollar(database: Database) -> None:
    costs = ["0.000001", "0.000002", "0.1", "0.2", "1.000003", "0.0000015"]
    await database.record_spend([entry("alice", cost) for cost in costs])
    await database.record_spend([entry("bob", "0.3", team="dev")])
    since = NOW - timedelta(hours=1)
    assert await database.spent(since=since, key="alice") == Decimal("1.3000075")
    assert await database.spent(since=since, team="ops") == Decimal("1.3000075")
    assert await database.spent(since=since, team="dev") == Decimal("0.3")
    assert await database.spent(since=since) == Decimal("1.6000075")  # 0.1 + 0.2 + ... is not 0.30000000000000004
    assert await database.spent(since=since, key="alice", team="dev") == Decimal(0)
    assert await database.spent(since=since, key="nobody") == Decimal(0)


async def test_spent_counts_from_its_start_inclusive(database: Database) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    await database.record_spend(
        [
            entry("alice", "1", at=start - timedelta(microseconds=1)),
            entry("alice", "2", at=start),
            entry("alice", "4", at=start + timedelta(days=2)),
        ]
    )
    assert await database.spent(since=start, key="alice") == Decimal(6)
    assert await database.spent(since=start + timedelta(days=1), key="alice") == Decimal(4)
    other_zone = start.astimezone(timezone(timedelta(hours=2)))  # the same moment written in another zone
    assert await database.spent(since=other_zone, key="alice") == Decimal(6)


async def test_usage_groups_by_key_and_route(database: Database) -> None:
    await database.record_spend(
        [
            entry("bob", "0.5", team=None, route=None),
            entry("alice", "0.25", route="rag"),
            entry("alice", "0.000001"),
            entry("alice", "0.000002"),
            entry("alice", "9", at=NOW - timedelta(days=40)),
        ]
    )
    rows = await database.usage(since=NOW - timedelta(days=1))
    assert rows == [
        UsageRow("alice", "ops", "gpt4", 2, 20, 10, Decimal("0.000003")),
        UsageRow("alice", "ops", "rag", 1, 10, 5, Decimal("0.25")),
        UsageRow("bob", None, None, 1, 10, 5, Decimal("0.5")),
    ]
    assert await database.usage(since=NOW - timedelta(days=1), key="bob") == [rows[2]]
    assert await database.usage(since=NOW + timedelta(days=1)) == []


async def test_an_empty_batch_writes_nothing(database: Database) -> None:
    await database.record_spend([])
    assert await database.usage(since=NOW - timedelta(days=365)) == []


async def test_a_reopened_database_keeps_keys_and_spend(opener: Callable[[], Database]) -> None:
    first = opener()
    await first.open()
    made, key = await create_key(first, "alice", budget_usd=Decimal(10), now=NOW)
    await first.record_spend([entry("alice", "2.5"), entry("alice", "0.000001")])
    version = await first.keys_version()
    await first.close()

    again = opener()  # a restart: a new process would open the same URL
    await again.open()
    assert await again.key("alice") == made
    assert made.digest == digest_of(key.encode())
    assert await again.spent(since=NOW - timedelta(hours=1), key="alice") == Decimal("2.500001")
    assert await again.keys_version() == version


async def test_migrations_run_once_however_often_it_opens(opener: Callable[[], Database]) -> None:
    first = opener()
    await first.open()
    await first.create_key(record("alice"))
    for _ in range(3):
        again = opener()
        await again.open()  # finds every migration applied: keeps the data, fails on nothing
        assert [k.name for k in await again.keys()] == ["alice"]
        await again.close()


async def test_two_processes_starting_at_once_migrate_once(opener: Callable[[], Database]) -> None:
    databases = [opener() for _ in range(4)]
    await asyncio.gather(*(database.open() for database in databases))
    await databases[0].create_key(record("alice"))
    for database in databases:
        assert [k.name for k in await database.keys()] == ["alice"]


async def test_creating_one_key_from_two_connections_at_once_lets_one_win(opener: Callable[[], Database]) -> None:
    one, two = opener(), opener()
    await asyncio.gather(one.open(), two.open())
    results = await asyncio.gather(
        one.create_key(record("alice")), two.create_key(record("alice")), return_exceptions=True
    )
    assert sorted(type(result).__name__ for result in results) == ["KeyExistsError", "NoneType"]


async def test_two_processes_migrating_one_new_database_at_once(auth_database_url: str) -> None:
    # Each `turnout keys list` opens the database, so it migrates it: two of them on a new database race.
    turnout = Path(sys.executable).parent / "turnout"
    env = {**os.environ, "TURNOUT_DATABASE_URL": auth_database_url}
    processes = [
        await asyncio.create_subprocess_exec(str(turnout), "keys", "list", "--json", env=env, stdout=PIPE, stderr=PIPE)
        for _ in range(2)
    ]
    outputs = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert [out for out, _ in outputs] == [b"[]\n", b"[]\n"]
    database = open_database(auth_database_url)
    await database.open()
    try:
        await database.create_key(record("alice"))
        assert [k.name for k in await database.keys()] == ["alice"]
    finally:
        await database.close()
