"""The fine-tuning holdout: which exchanges are kept out of training, by a hash of their id, and remembered.

`held_out(request_id, share)` is a pure function: the first 8 bytes of SHA-256 of the id, as an integer,
modulo 10,000, below `share` x 10,000. So the same exchange is always in or out at the same share, on
every machine, in every run; a larger share holds out a superset.

The register remembers every exchange an export ever held out, so that it is never exported for training
afterwards, even by an export with a smaller share or none (`--holdout 0`): it is what the fine-tune is
measured on. It lives beside the traffic log: for a JSONL log `STEM.jsonl`, the file `STEM.holdout.jsonl`
(one `{"request_id", "held_at", "route", "rule", "prompt_key"}` a line, appended; `DIR/holdout.jsonl` for a `jsonl:///DIR`
store); for an SQLite or PostgreSQL store, the
table `turnout_holdout` (migration 4, `proxy.auth.migrations`) of the same database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proxy.auth.store import open_database

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "BUCKETS",
    "Held",
    "Holdout",
    "HoldoutRegister",
    "JsonlHoldoutRegister",
    "SqlHoldoutRegister",
    "held_out",
    "open_holdout_register",
    "parse_share",
]

BUCKETS = 10_000
"""The hash's resolution: a share is held out to 0.01%."""


def parse_share(text: str) -> float:
    """`10%` or `0.1` → 0.1.

    Raises:
        ValueError: not a percentage or a fraction between 0 and 1.
    """
    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"--holdout {text!r}: expected a percentage (10%) or a fraction (0.1)") from None
    if not 0 <= share < 1:
        raise ValueError(f"--holdout {text!r}: the share is from 0 up to (not including) 100%")
    return share


def held_out(request_id: str, share: float) -> bool:
    """Whether the exchange `request_id` is in the holdout of `share` (deterministic: see the module docstring)."""
    bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") % BUCKETS
    return bucket < round(share * BUCKETS)


@dataclass(frozen=True, slots=True)
class Held:
    """An exchange put in the holdout."""

    request_id: str
    route: str | None
    rule: str | None
    prompt_key: str | None = None
    """The example's prompt key (`proxy.traffic.finetune.Example.prompt_key`): the same prompt is never trained on."""


@dataclass(frozen=True, slots=True)
class Holdout:
    """What the register holds: the held-out exchanges' ids and their prompts' keys."""

    ids: frozenset[str] = frozenset()
    prompts: frozenset[str] = frozenset()


class HoldoutRegister(Protocol):
    """Where the held-out exchanges are remembered."""

    where: str
    """Where the register is, for messages (a path, or the table)."""

    async def held(self) -> Holdout:
        """The ids and prompt keys of every exchange held out so far."""
        ...

    async def add(self, exchanges: Iterable[Held], at: datetime) -> None:
        """Remember `exchanges` as held out (those already there stay as they were)."""
        ...


class JsonlHoldoutRegister:
    """The register as a JSON Lines file beside a JSONL traffic log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        """Where the register is, for messages."""

    async def held(self) -> Holdout:
        """Every `request_id` and `prompt_key` in the file (none when it does not exist yet)."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> Holdout:
        if not self.path.exists():
            return Holdout()
        ids, prompts = set(), set()
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    row = json.loads(line)
                    ids.add(str(row["request_id"]))
                    if row.get("prompt_key"):
                        prompts.add(str(row["prompt_key"]))
        return Holdout(frozenset(ids), frozenset(prompts))

    async def add(self, exchanges: Iterable[Held], at: datetime) -> None:
        """Append the exchanges not yet in the file."""
        await asyncio.to_thread(self._append, list(exchanges), at)

    def _append(self, exchanges: list[Held], at: datetime) -> None:
        known = self._read().ids
        rows = [e for e in exchanges if e.request_id not in known]
        if not rows:
            return
        with self.path.open("a", encoding="utf-8") as out:
            for e in rows:
                row = {
                    "request_id": e.request_id,
                    "held_at": at.isoformat(),
                    "route": e.route,
                    "rule": e.rule,
                    "prompt_key": e.prompt_key,
                }
                out.write(json.dumps(row) + "\n")


class SqlHoldoutRegister:
    """The register as the `turnout_holdout` table of the traffic store's SQLite or PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = "the table turnout_holdout"
        """Where the register is, for messages."""

    async def _migrated(self) -> None:
        database = open_database(self.url)  # opening migrates, to version 4 and its table included
        await database.open()
        await database.close()

    async def held(self) -> Holdout:
        """Every `request_id` and `prompt_key` in the table."""
        await self._migrated()
        if self.url.startswith("sqlite"):
            return await asyncio.to_thread(self._sqlite_held)
        async with await _connect_pg(self.url) as connection:
            cursor = await connection.execute(_SELECT)
            return _holdout(await cursor.fetchall())

    async def add(self, exchanges: Iterable[Held], at: datetime) -> None:
        """Insert the exchanges not yet in the table, in one transaction."""
        rows = [(e.request_id, e.route, e.rule, e.prompt_key) for e in exchanges]
        await self._migrated()
        if self.url.startswith("sqlite"):
            await asyncio.to_thread(self._sqlite_add, rows, at)
            return
        async with await _connect_pg(self.url) as connection, connection.cursor() as cur:
            await cur.executemany(
                "INSERT INTO turnout_holdout (request_id, held_at, route, rule, prompt_key) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING",
                [(request_id, at, route, rule, key) for request_id, route, rule, key in rows],
            )

    def _sqlite(self) -> sqlite3.Connection:
        return sqlite3.connect(self.url[len("sqlite:///") :], timeout=5)

    def _sqlite_held(self) -> Holdout:
        with closing(self._sqlite()) as connection:
            return _holdout(connection.execute(_SELECT).fetchall())

    def _sqlite_add(self, rows: list[tuple[str, str | None, str | None, str | None]], at: datetime) -> None:
        stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with closing(self._sqlite()) as connection, connection:
            connection.executemany(
                "INSERT OR IGNORE INTO turnout_holdout (request_id, held_at, route, rule, prompt_key) "
                "VALUES (?, ?, ?, ?, ?)",
                [(request_id, stamp, route, rule, key) for request_id, route, rule, key in rows],
            )


_SELECT = "SELECT request_id, prompt_key FROM turnout_holdout"


def _holdout(rows: Iterable[tuple[Any, ...]]) -> Holdout:
    ids, prompts = set(), set()
    for request_id, prompt_key in rows:
        ids.add(request_id)
        if prompt_key:
            prompts.add(prompt_key)
    return Holdout(frozenset(ids), frozenset(prompts))


async def _connect_pg(url: str) -> psycopg.AsyncConnection[Any]:
    """A connection to the URL's database, with its `schema=` as the search path (as the keys' database does)."""
    import psycopg  # only with PostgreSQL: psycopg is slow to import

    from proxy.auth.postgres import split_schema

    conninfo, schema = split_schema(url)
    options: dict[str, Any] = {"connect_timeout": 10}
    if schema is not None:
        options["options"] = f"-csearch_path={schema}"
    return await psycopg.AsyncConnection.connect(conninfo, **options)


def open_holdout_register(store: str) -> HoldoutRegister:
    """The register beside the traffic store `store` (a database URL, or a JSONL log's path)."""
    if store.startswith(("sqlite:", "postgresql:", "postgres:")):
        return SqlHoldoutRegister(store)
    if store.lower().startswith("jsonl:///"):
        return JsonlHoldoutRegister(Path(store[len("jsonl:///") :]) / "holdout.jsonl")
    log = Path(store)
    stem = log.name[: -len(".jsonl")] if log.name.endswith(".jsonl") else log.name
    return JsonlHoldoutRegister(log.with_name(f"{stem}.holdout.jsonl"))
