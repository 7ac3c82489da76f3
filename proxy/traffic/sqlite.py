"""`SqliteTrafficStore`: the traffic log in an SQLite file (the keys database by default), stdlib `sqlite3` in a thread.

The table is the keys database's `turnout_traffic` (migration 2, `proxy.auth.migrations`): opening the store
runs the keys database's migrations first, so a traffic-only file has the same schema. One connection, used by
one worker thread, so neither the event loop nor another thread ever touches it. A batch's rows are encoded on
the event loop, a slice at a time, and inserted by a few multi-row `INSERT`s: the thread then holds the GIL for
moments only (each statement releases it once), where encoding there, or `executemany`'s release and retake
for every row, would make the event loop wait for the GIL at each of its system calls. Reads page through the
table by `(at, request_id)`, so no cursor stays open across an `await`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from proxy.auth.sqlite import BUSY_TIMEOUT_MS, SqliteDatabase, immediate_transaction, wal_mode
from proxy.auth.store import DatabaseError
from proxy.traffic.record import Exchange
from proxy.traffic.rows import COLUMNS, PAGE, decode_row, encode_row, filters, json_text, page_query, select
from proxy.traffic.store import TrafficStoreError

__all__ = ["SqliteTrafficStore"]

T = TypeVar("T")
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
ROWS_PER_INSERT = 200
"""Rows in one `INSERT` (200 times 25 values, within SQLite's 32,766)."""
ENCODED_PER_YIELD = 64
"""Rows encoded on the event loop between two yields."""
_ROW = f"({', '.join('?' * len(COLUMNS))})"


@functools.cache
def _insert(rows: int) -> str:
    """`INSERT OR IGNORE` of `rows` rows in one statement."""
    values = ", ".join([_ROW] * rows)
    return f"INSERT OR IGNORE INTO turnout_traffic ({', '.join(COLUMNS)}) VALUES {values}"  # noqa: S608


def _time(at: float) -> str:
    """`at` as `_FORMAT` (UTC, to the microsecond): the second's text is made once for all its exchanges."""
    second, micro = divmod(round(at * 1_000_000), 1_000_000)
    return f"{_second(second)}.{micro:06d}Z"


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _seconds(text: str) -> float:
    return datetime.strptime(text, _FORMAT).replace(tzinfo=UTC).timestamp()


class SqliteTrafficStore:
    """Exchanges in the `turnout_traffic` table of one SQLite file (created, with its directory, when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.display_url = f"sqlite:///{path}"
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Migrate the file (the keys database's migrations), then open this store's own connection."""
        async with self._opening:
            if self._connection is not None:
                return
            schema = SqliteDatabase(self.path)
            try:
                await schema.open()
            except DatabaseError as exc:
                raise TrafficStoreError(str(exc)) from exc
            finally:
                await schema.close()
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnout-traffic")
            try:
                self._connection = await asyncio.get_running_loop().run_in_executor(executor, self._connect)
            except sqlite3.Error as exc:
                executor.shutdown(wait=False)
                raise TrafficStoreError(f"{self.display_url}: {exc}") from exc
            self._executor = executor

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        wal_mode(connection)
        connection.execute("PRAGMA synchronous = NORMAL")
        return connection

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            await self.open()
        connection, executor = self._connection, self._executor
        if connection is None or executor is None:
            raise TrafficStoreError(f"{self.display_url} is closed")

        def call() -> T:
            try:
                return work(connection)
            except sqlite3.Error as exc:
                raise TrafficStoreError(f"{self.display_url}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        executor, connection = self._executor, self._connection
        self._executor = self._connection = None
        if executor is None:
            return
        if connection is not None:
            await asyncio.get_running_loop().run_in_executor(executor, connection.close)
        executor.shutdown(wait=True)

    async def write(self, exchanges: Sequence[Exchange]) -> None:
        """Insert the exchanges in one transaction (encoded here, a slice at a time; inserted in the thread)."""
        if not exchanges:
            return
        rows: list[tuple[Any, ...]] = []
        for index, exchange in enumerate(exchanges, 1):
            rows.append(encode_row(exchange, _time, str, json_text))
            if index % ENCODED_PER_YIELD == 0:
                await asyncio.sleep(0)

        def insert(connection: sqlite3.Connection) -> None:
            with immediate_transaction(connection):
                for start in range(0, len(rows), ROWS_PER_INSERT):
                    chunk = rows[start : start + ROWS_PER_INSERT]
                    connection.execute(_insert(len(chunk)), list(itertools.chain.from_iterable(chunk)))

        await self._run(insert)

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
        clauses, parameters = filters("?", _time, since, until, route, rule)
        after: tuple[Any, Any] | None = None
        while True:
            query, page_parameters = page_query("?", with_content, clauses, parameters, after)
            rows = await self._run(_fetch(query, page_parameters))
            for row in rows:
                yield decode_row(row, _seconds)
            if len(rows) < PAGE:
                return
            after = (rows[-1][1], rows[-1][0])

    async def get(self, request_id: str, *, with_content: bool = True) -> Exchange | None:
        """The exchange of that request id, or None."""
        query = f"SELECT {select(with_content)} FROM turnout_traffic WHERE request_id = ?"  # noqa: S608
        row = await self._run(lambda c: c.execute(query, (request_id,)).fetchone())
        return None if row is None else decode_row(row, _seconds)

    async def feedback(self, request_id: str, *, score: float | None, label: str | None, comment: str | None) -> bool:
        """Set the given fields of the exchange; False when there is none of that id."""

        def update(connection: sqlite3.Connection) -> bool:
            with immediate_transaction(connection):
                cursor = connection.execute(
                    "UPDATE turnout_traffic SET score = COALESCE(?, score), label = COALESCE(?, label), "
                    "comment = COALESCE(?, comment) WHERE request_id = ?",
                    (score, label, comment, request_id),
                )
                return cursor.rowcount > 0

        return await self._run(update)

    async def prune(self, *, older_than: float | None, max_rows: int | None) -> int:
        """Delete by age, then the oldest beyond `max_rows`, in one transaction."""

        def delete(connection: sqlite3.Connection) -> int:
            removed = 0
            with immediate_transaction(connection):
                if older_than is not None:
                    removed += connection.execute(
                        "DELETE FROM turnout_traffic WHERE at < ?", (_time(older_than),)
                    ).rowcount
                if max_rows is not None:
                    removed += connection.execute(
                        "DELETE FROM turnout_traffic WHERE id IN (SELECT id FROM turnout_traffic "
                        "ORDER BY at DESC, request_id DESC LIMIT -1 OFFSET ?)",
                        (max_rows,),
                    ).rowcount
            return removed

        return await self._run(delete)


def _fetch(query: str, parameters: Sequence[Any]) -> Callable[[sqlite3.Connection], list[Any]]:
    return lambda connection: connection.execute(query, parameters).fetchall()
