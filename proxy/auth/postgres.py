"""`PostgresDatabase`: keys and the ledger in PostgreSQL, for replicas (psycopg 3, async, with a small pool).

The URL is libpq's (`postgresql://user:pass@host:port/db?sslmode=...`), plus one parameter of Turnout's own,
`schema=NAME`: the tables live in that schema (created when missing), so one database can hold several
deployments (or tests) side by side. Money is NUMERIC (psycopg reads it as Decimal: exact); times timestamptz.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from proxy.auth.keys import KeyRecord
from proxy.auth.migrations import MIGRATION_LOCK, POSTGRES, SCHEMA_TABLE, pending
from proxy.auth.pairs import STATEMENTS, CanaryRow, OutcomeCount, PairRow, canary_row, canary_values, pair_values
from proxy.auth.store import (
    KEY_COLUMNS,
    DatabaseError,
    KeyExistsError,
    SpendEntry,
    UsageRow,
    display,
    key_record,
    key_row,
    usage_order,
    utc,
)

__all__ = ["PostgresDatabase", "split_schema"]

POOL_SIZE = 4
"""Connections kept: the ledger's writer, the key ring's poll, and room for the admin API and budget seeding."""
CONNECT_TIMEOUT = 10.0


def split_schema(url: str) -> tuple[str, str | None]:
    """`url` without its `schema=` query parameter (which libpq does not know), and that schema."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    rest = urllib.parse.urlencode([(name, value) for name, value in query if name != "schema"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), (schemas[-1] if schemas else None)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class PostgresDatabase:
    """The keys and the ledger in a PostgreSQL database (in the URL's `schema`, else the search path's first)."""

    def __init__(self, url: str) -> None:
        self.display_url = display(url)
        self._conninfo, self.schema = split_schema(url)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"connect_timeout": int(CONNECT_TIMEOUT)}
        if self.schema is not None:
            options["options"] = f"-csearch_path={self.schema}"
        return options

    async def open(self) -> None:
        """Open the pool (waiting for its first connection) and migrate."""
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo,
            kwargs=self._connect_options(),
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            name="turnout-auth",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, OSError) as exc:  # psycopg_pool.PoolTimeout is a psycopg.Error
            await pool.close()
            raise DatabaseError(f"{self.display_url}: could not connect: {exc}") from exc
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        async with self._transaction() as connection:
            # The lock first: a second process starting at once waits here, then finds nothing left to do.
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if self.schema is not None:
                await connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            await connection.execute(SCHEMA_TABLE)
            cursor = await connection.execute("SELECT version FROM turnout_schema")
            applied = [row[0] for row in await cursor.fetchall()]
            for migration in pending(applied, POSTGRES):
                for statement in migration.statements:
                    await connection.execute(statement)
                await connection.execute(
                    "INSERT INTO turnout_schema (version, applied_at) VALUES (%s, %s)",
                    (migration.version, datetime.now(UTC).isoformat()),
                )

    async def close(self) -> None:
        """Close every connection of the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection inside one transaction; any psycopg failure leaves as `DatabaseError`."""
        if self._pool is None:
            raise DatabaseError(f"{self.display_url} is not open")
        try:
            async with self._pool.connection(timeout=CONNECT_TIMEOUT) as connection, connection.transaction():
                yield connection
        except psycopg.Error as exc:
            raise DatabaseError(f"{self.display_url}: {exc}") from exc

    async def create_key(self, record: KeyRecord) -> None:
        """Insert the key and bump the version, in one transaction."""
        row = key_row(record, utc, lambda money: money)
        placeholders = ", ".join(["%s"] * 13)
        try:
            async with self._transaction() as connection:
                await connection.execute(
                    f"INSERT INTO turnout_keys ({KEY_COLUMNS}) VALUES ({placeholders})",  # noqa: S608 - constant columns
                    row,
                )
                await connection.execute("UPDATE turnout_keys_version SET version = version + 1 WHERE id = 1")
        except DatabaseError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise KeyExistsError(f"a key named {record.name!r} exists already") from exc
            raise

    async def keys(self) -> list[KeyRecord]:
        """Every key, by name."""
        async with self._transaction() as connection:
            cursor = await connection.execute(f"SELECT {KEY_COLUMNS} FROM turnout_keys ORDER BY name")  # noqa: S608 - constant columns
            rows = await cursor.fetchall()
        return [key_record(row, _to_utc) for row in rows]

    async def key(self, name: str) -> KeyRecord | None:
        """The key named `name`, or None."""
        async with self._transaction() as connection:
            cursor = await connection.execute(
                f"SELECT {KEY_COLUMNS} FROM turnout_keys WHERE name = %s",  # noqa: S608 - constant columns
                (name,),
            )
            row = await cursor.fetchone()
        return None if row is None else key_record(row, _to_utc)

    async def revoke(self, name: str, at: datetime) -> bool:
        """Revoke the key (and bump the version) unless it is missing or revoked already."""
        async with self._transaction() as connection:
            cursor = await connection.execute(
                "UPDATE turnout_keys SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL", (utc(at), name)
            )
            if cursor.rowcount:
                await connection.execute("UPDATE turnout_keys_version SET version = version + 1 WHERE id = 1")
            return bool(cursor.rowcount)

    async def keys_version(self) -> int:
        """The version counter (one row)."""
        async with self._transaction() as connection:
            cursor = await connection.execute("SELECT version FROM turnout_keys_version WHERE id = 1")
            row = await cursor.fetchone()
        if row is None:
            raise DatabaseError(f"{self.display_url}: the keys' version row is missing")
        return int(row[0])

    async def record_spend(self, entries: Sequence[SpendEntry]) -> None:
        """Append the entries in one transaction (one `executemany`, pipelined by psycopg)."""
        if not entries:
            return
        rows = [
            (
                utc(e.at),
                e.key,
                e.team,
                e.route,
                e.endpoint,
                e.model,
                e.cost_usd,
                e.input_tokens,
                e.output_tokens,
                e.cache_hit,
                e.request_id,
            )
            for e in entries
        ]
        async with self._transaction() as connection, connection.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO turnout_ledger (at, key, team, route, endpoint, model, cost_usd, input_tokens, "
                "output_tokens, cache_hit, request_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )

    async def spent(self, *, since: datetime, key: str | None = None, team: str | None = None) -> Decimal:
        """The exact sum of cost since `since`, filtered by key and/or team."""
        where, parameters = _filters(since, key=key, team=team)
        async with self._transaction() as connection:
            cursor = await connection.execute(
                f"SELECT COALESCE(SUM(cost_usd), 0) FROM turnout_ledger WHERE {where}",  # noqa: S608 - constant columns
                parameters,
            )
            row = await cursor.fetchone()
        return Decimal(0) if row is None else Decimal(row[0])

    async def usage(self, *, since: datetime, key: str | None = None) -> list[UsageRow]:
        """Spend since `since` grouped by key, team and route."""
        where, parameters = _filters(since, key=key)
        async with self._transaction() as connection:
            cursor = await connection.execute(
                "SELECT key, team, route, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd) "  # noqa: S608 - constant columns
                f"FROM turnout_ledger WHERE {where} GROUP BY key, team, route",
                parameters,
            )
            rows = await cursor.fetchall()
        return usage_order([UsageRow(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), Decimal(r[6])) for r in rows])

    async def record_pair(self, row: PairRow) -> None:
        """Append one pair."""
        async with self._transaction() as connection:
            await connection.execute(_SQL["insert_pair"], pair_values(row, utc))

    async def pair_counts(self, rule: str, candidate: str, since_version: int = 0) -> list[OutcomeCount]:
        """Pairs by canary version and outcome."""
        async with self._transaction() as connection:
            cursor = await connection.execute(_SQL["count_pairs"], (rule, candidate, since_version))
            rows = await cursor.fetchall()
        return [OutcomeCount(int(r[0]), str(r[1]), int(r[2]), r[3], r[4]) for r in rows]

    async def canary(self, rule: str) -> CanaryRow | None:
        """The rule's canary row."""
        async with self._transaction() as connection:
            cursor = await connection.execute(_SQL["canary"], (rule,))
            row = await cursor.fetchone()
        return None if row is None else canary_row(row, _to_utc)

    async def canaries(self) -> list[CanaryRow]:
        """Every canary row."""
        async with self._transaction() as connection:
            cursor = await connection.execute(_SQL["canaries"])
            rows = await cursor.fetchall()
        return [canary_row(row, _to_utc) for row in rows]

    async def put_canary(self, row: CanaryRow, expected_version: int | None) -> bool:
        """Insert (no row yet) or compare-and-set on the version."""
        values = canary_values(row, utc)
        async with self._transaction() as connection:
            if expected_version is None:
                cursor = await connection.execute(_SQL["insert_canary"], values)
            else:
                cursor = await connection.execute(_SQL["update_canary"], (*values[1:], row.rule, expected_version))
            return bool(cursor.rowcount)


_SQL: dict[str, Any] = {name: statement.replace("?", "%s") for name, statement in STATEMENTS.items()}
"""The parity statements in psycopg's placeholders."""


def _filters(since: datetime, *, key: str | None = None, team: str | None = None) -> tuple[str, list[Any]]:
    clauses, parameters = ["at >= %s"], [cast("Any", utc(since))]
    for column, value in (("key", key), ("team", team)):
        if value is not None:
            clauses.append(f"{column} = %s")
            parameters.append(value)
    return " AND ".join(clauses), parameters
