"""`SqliteDatabase`: keys and the ledger in an SQLite file, the embedded default (stdlib `sqlite3`, in a thread).

One connection, used by one worker thread only, so the event loop never blocks on the file and the connection
is never shared between threads. WAL mode lets readers (another process's `turnout keys list`) go on while a
writer writes; the busy timeout makes a second writer wait instead of failing. Sums of money run in a Python
aggregate over the TEXT decimals: SQLite's own SUM would turn them into floats.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from proxy.auth.keys import KeyRecord
from proxy.auth.migrations import SCHEMA_TABLE, SQLITE, pending
from proxy.auth.pairs import STATEMENTS, CanaryRow, OutcomeCount, PairRow, canary_row, canary_values, pair_values
from proxy.auth.store import (
    KEY_COLUMNS,
    DatabaseError,
    KeyExistsError,
    SpendEntry,
    UsageRow,
    key_record,
    key_row,
    usage_order,
    utc,
)

__all__ = ["BUSY_TIMEOUT_MS", "SqliteDatabase", "immediate_transaction", "wal_mode"]

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's write (a migration, a batch of spend) before failing."""


_INSERT_KEY = f"INSERT INTO turnout_keys ({KEY_COLUMNS}) VALUES ({', '.join('?' * 13)})"  # noqa: S608 - constants


def _time(value: datetime) -> str:
    """Fixed-width UTC text: text order is time order, so `at >= ?` compares correctly."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class _DecimalSum:
    """SQL aggregate `decimal_sum(text)`: an exact sum of TEXT decimals, as text."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return str(self.total)


class SqliteDatabase:
    """The keys and the ledger in one SQLite file (created, with its directory, on `open()`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.display_url = f"sqlite:///{path}"
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._connection is None:
            raise DatabaseError(f"{self.display_url} is not open")
        connection = self._connection

        def call() -> T:
            try:
                return work(connection)
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise DatabaseError(f"{self.display_url}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        """Create the file (and its directory) when missing, set WAL mode, and migrate."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnout-sqlite")
        try:
            self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
            await self._run(_migrate)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise DatabaseError(f"{self.display_url}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level None): every write below opens its own BEGIN IMMEDIATE.
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        wal_mode(connection)
        connection.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process crash
        connection.create_aggregate("decimal_sum", 1, _DecimalSum)  # type: ignore[arg-type]  # typeshed: int steps only
        return connection

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        executor, connection = self._executor, self._connection
        self._executor = self._connection = None
        if executor is None:
            return
        if connection is not None:
            await asyncio.get_running_loop().run_in_executor(executor, connection.close)
        executor.shutdown(wait=True)

    async def create_key(self, record: KeyRecord) -> None:
        """Insert the key and bump the version, in one transaction."""
        row = key_row(record, _time, str)

        def insert(connection: sqlite3.Connection) -> None:
            with immediate_transaction(connection):
                connection.execute(_INSERT_KEY, row)
                connection.execute("UPDATE turnout_keys_version SET version = version + 1 WHERE id = 1")

        try:
            await self._run(insert)
        except sqlite3.IntegrityError as exc:
            raise KeyExistsError(f"a key named {record.name!r} exists already") from exc

    async def keys(self) -> list[KeyRecord]:
        """Every key, by name."""
        rows = await self._run(
            lambda c: c.execute(f"SELECT {KEY_COLUMNS} FROM turnout_keys ORDER BY name").fetchall()  # noqa: S608
        )
        return [key_record(row, _parse_time) for row in rows]

    async def key(self, name: str) -> KeyRecord | None:
        """The key named `name`, or None."""
        query = f"SELECT {KEY_COLUMNS} FROM turnout_keys WHERE name = ?"  # noqa: S608
        row = await self._run(lambda c: c.execute(query, (name,)).fetchone())
        return None if row is None else key_record(row, _parse_time)

    async def revoke(self, name: str, at: datetime) -> bool:
        """Revoke the key (and bump the version) unless it is missing or revoked already."""

        def update(connection: sqlite3.Connection) -> bool:
            with immediate_transaction(connection):
                changed = connection.execute(
                    "UPDATE turnout_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (_time(at), name)
                ).rowcount
                if changed:
                    connection.execute("UPDATE turnout_keys_version SET version = version + 1 WHERE id = 1")
                return bool(changed)

        return await self._run(update)

    async def keys_version(self) -> int:
        """The version counter (one indexed row)."""
        row = await self._run(lambda c: c.execute("SELECT version FROM turnout_keys_version WHERE id = 1").fetchone())
        return int(row[0])

    async def record_spend(self, entries: Sequence[SpendEntry]) -> None:
        """Append the entries in one transaction."""
        rows = [
            (
                _time(e.at),
                e.key,
                e.team,
                e.route,
                e.endpoint,
                e.model,
                str(e.cost_usd),
                e.input_tokens,
                e.output_tokens,
                int(e.cache_hit),
                e.request_id,
            )
            for e in entries
        ]
        if not rows:
            return

        def insert(connection: sqlite3.Connection) -> None:
            with immediate_transaction(connection):
                connection.executemany(
                    "INSERT INTO turnout_ledger (at, key, team, route, endpoint, model, cost_usd, input_tokens, "
                    "output_tokens, cache_hit, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )

        await self._run(insert)

    async def spent(self, *, since: datetime, key: str | None = None, team: str | None = None) -> Decimal:
        """The exact sum of cost since `since`, filtered by key and/or team."""
        where, parameters = _filters(since, key=key, team=team)
        query = f"SELECT decimal_sum(cost_usd) FROM turnout_ledger WHERE {where}"  # noqa: S608
        row = await self._run(lambda c: c.execute(query, parameters).fetchone())
        return Decimal(0) if row[0] is None else Decimal(row[0])

    async def usage(self, *, since: datetime, key: str | None = None) -> list[UsageRow]:
        """Spend since `since` grouped by key, team and route."""
        where, parameters = _filters(since, key=key)
        query = (
            "SELECT key, team, route, COUNT(*), SUM(input_tokens), SUM(output_tokens), decimal_sum(cost_usd) "  # noqa: S608
            f"FROM turnout_ledger WHERE {where} GROUP BY key, team, route"
        )
        rows = await self._run(lambda c: c.execute(query, parameters).fetchall())
        return usage_order([UsageRow(r[0], r[1], r[2], r[3], r[4], r[5], Decimal(r[6])) for r in rows])

    async def record_pair(self, row: PairRow) -> None:
        """Append one pair."""
        values = pair_values(row, _time)

        def insert(connection: sqlite3.Connection) -> None:
            with immediate_transaction(connection):
                connection.execute(STATEMENTS["insert_pair"], values)

        await self._run(insert)

    async def pair_counts(self, rule: str, candidate: str, since_version: int = 0) -> list[OutcomeCount]:
        """Pairs by canary version and outcome."""
        query, parameters = STATEMENTS["count_pairs"], (rule, candidate, since_version)
        rows = await self._run(lambda c: c.execute(query, parameters).fetchall())
        return [OutcomeCount(int(r[0]), str(r[1]), int(r[2]), r[3], r[4]) for r in rows]

    async def canary(self, rule: str) -> CanaryRow | None:
        """The rule's canary row."""
        row = await self._run(lambda c: c.execute(STATEMENTS["canary"], (rule,)).fetchone())
        return None if row is None else canary_row(row, _parse_time)

    async def canaries(self) -> list[CanaryRow]:
        """Every canary row."""
        rows = await self._run(lambda c: c.execute(STATEMENTS["canaries"]).fetchall())
        return [canary_row(row, _parse_time) for row in rows]

    async def put_canary(self, row: CanaryRow, expected_version: int | None) -> bool:
        """Insert (no row yet) or compare-and-set on the version."""
        values = canary_values(row, _time)

        def write(connection: sqlite3.Connection) -> bool:
            with immediate_transaction(connection):
                if expected_version is None:
                    return bool(connection.execute(STATEMENTS["insert_canary"], values).rowcount)
                changes = (*values[1:], row.rule, expected_version)
                return bool(connection.execute(STATEMENTS["update_canary"], changes).rowcount)

        return await self._run(write)


def _filters(since: datetime, *, key: str | None = None, team: str | None = None) -> tuple[str, list[Any]]:
    clauses, parameters = ["at >= ?"], [_time(since)]
    for column, value in (("key", key), ("team", team)):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    return " AND ".join(clauses), parameters


class immediate_transaction:  # noqa: N801 - used as a `with` statement, like a function
    """`BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK`): the write lock is taken first, so no upgrade deadlock."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        self.connection.execute("ROLLBACK" if kind is not None else "COMMIT")


def wal_mode(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL mode, waiting out another connection doing the same (for the busy timeout at most).

    The switch takes its lock without calling the busy handler: two processes opening one new database at once
    would otherwise see "database is locked" at once (4 openers at once failed 14 times in 300 here).
    """
    give_up = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() >= give_up:
                raise
            time.sleep(0.005)


def _migrate(connection: sqlite3.Connection) -> None:
    """Apply the missing migrations in one write transaction (a second process waits, then finds none missing)."""
    with immediate_transaction(connection):
        connection.execute(SCHEMA_TABLE)
        applied = [row[0] for row in connection.execute("SELECT version FROM turnout_schema")]
        for migration in pending(applied, SQLITE):
            for statement in migration.statements:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO turnout_schema (version, applied_at) VALUES (?, ?)",
                (migration.version, _time(datetime.now(UTC))),
            )
