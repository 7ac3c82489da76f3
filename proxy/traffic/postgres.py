"""`PostgresTrafficStore`: the traffic log in PostgreSQL (psycopg 3, async, a small pool of its own).

The table is the keys database's `turnout_traffic` (migration 2, `proxy.auth.migrations`), in the URL's
`schema=` when it has one: opening runs the keys database's migrations first. A batch is one transaction, one
pipelined `executemany`; JSON columns are JSONB (sent as text and cast, so encoding stays msgspec's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from proxy.auth.postgres import CONNECT_TIMEOUT, PostgresDatabase, split_schema
from proxy.auth.store import DatabaseError, display
from proxy.traffic.record import Exchange
from proxy.traffic.rows import COLUMNS, PAGE, decode_row, encode_row, filters, json_text, page_query, select
from proxy.traffic.store import TrafficStoreError

__all__ = ["PostgresTrafficStore"]

POOL_SIZE = 2
"""The writer's connection and one for reads and feedback."""
_JSON = frozenset({"fallbacks", "usage", "request", "answer"})
_VALUES = ", ".join("%s::jsonb" if column in _JSON else "%s" for column in COLUMNS)
_INSERT = (
    f"INSERT INTO turnout_traffic ({', '.join(COLUMNS)}) VALUES ({_VALUES}) "  # noqa: S608 - constant columns
    "ON CONFLICT (request_id) DO NOTHING"
)


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _seconds(value: datetime) -> float:
    return value.timestamp()


def _json(value: Any) -> str | None:
    """JSON text PostgreSQL's JSONB takes: it refuses the NUL character, so that one becomes U+FFFD."""
    text = json_text(value)
    return None if text is None else text.replace("\\u0000", "\\ufffd")


class PostgresTrafficStore:
    """Exchanges in the `turnout_traffic` table of a PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display_url = display(url)
        self._conninfo, self.schema = split_schema(url)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Migrate (the keys database's migrations), then open the pool."""
        async with self._opening:
            if self._pool is None:
                self._pool = await self._connect()

    async def _connect(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        schema = PostgresDatabase(self.url)
        try:
            await schema.open()
        except DatabaseError as exc:
            raise TrafficStoreError(str(exc)) from exc
        finally:
            await schema.close()
        options: dict[str, Any] = {"connect_timeout": int(CONNECT_TIMEOUT)}
        if self.schema is not None:
            options["options"] = f"-csearch_path={self.schema}"
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo, kwargs=options, min_size=1, max_size=POOL_SIZE, open=False, name="turnout-traffic"
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            raise TrafficStoreError(f"{self.display_url}: could not connect: {exc}") from exc
        return pool

    async def close(self) -> None:
        """Close the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            await self.open()
        if self._pool is None:
            raise TrafficStoreError(f"{self.display_url} is closed")
        try:
            async with self._pool.connection(timeout=CONNECT_TIMEOUT) as connection, connection.transaction():
                yield connection
        except psycopg.Error as exc:
            raise TrafficStoreError(f"{self.display_url}: {exc}") from exc

    async def write(self, exchanges: Sequence[Exchange]) -> None:
        """Insert the exchanges in one transaction; a request id stored already is skipped."""
        if not exchanges:
            return
        rows = [encode_row(e, _time, lambda money: money, _json) for e in exchanges]
        async with self._transaction() as connection, connection.cursor() as cursor:
            await cursor.executemany(_INSERT, rows)

    async def exchanges(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        route: str | None = None,
        rule: str | None = None,
        with_content: bool = False,
    ) -> AsyncIterator[Exchange]:
        """The matching exchanges in time order, a page at a time."""
        clauses, parameters = filters("%s", _time, since, until, route, rule)
        after: tuple[Any, Any] | None = None
        while True:
            query, page_parameters = page_query("%s", with_content, clauses, parameters, after)
            async with self._transaction() as connection:
                cursor = await connection.execute(query, page_parameters)
                rows = await cursor.fetchall()
            for row in rows:
                yield decode_row(row, _seconds)
            if len(rows) < PAGE:
                return
            after = (rows[-1][1], rows[-1][0])

    async def get(self, request_id: str, *, with_content: bool = True) -> Exchange | None:
        """The exchange of that request id, or None."""
        async with self._transaction() as connection:
            cursor = await connection.execute(
                f"SELECT {select(with_content)} FROM turnout_traffic WHERE request_id = %s",  # noqa: S608
                (request_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else decode_row(row, _seconds)

    async def feedback(self, request_id: str, *, score: float | None, label: str | None, comment: str | None) -> bool:
        """Set the given fields of the exchange; False when there is none of that id."""
        async with self._transaction() as connection:
            cursor = await connection.execute(
                "UPDATE turnout_traffic SET score = COALESCE(%s, score), label = COALESCE(%s, label), "
                "comment = COALESCE(%s, comment) WHERE request_id = %s",
                (score, label, comment, request_id),
            )
            return cursor.rowcount > 0

    async def prune(self, *, older_than: float | None, max_rows: int | None) -> int:
        """Delete by age, then the oldest beyond `max_rows`, in one transaction."""
        removed = 0
        async with self._transaction() as connection:
            if older_than is not None:
                cursor = await connection.execute("DELETE FROM turnout_traffic WHERE at < %s", (_time(older_than),))
                removed += cursor.rowcount
            if max_rows is not None:
                cursor = await connection.execute(
                    "DELETE FROM turnout_traffic WHERE id IN (SELECT id FROM turnout_traffic "
                    "ORDER BY at DESC, request_id DESC OFFSET %s)",
                    (max_rows,),
                )
                removed += cursor.rowcount
        return removed
