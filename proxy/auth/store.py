"""The database of keys and spend: one protocol (`Database`), two implementations (SQLite, PostgreSQL), one opener.

An SQLite file is the embedded default (`turnout serve` needs no server); PostgreSQL serves replicas. Both keep
money exact (TEXT decimals or NUMERIC, never a float) and times in UTC. `key_row` and `key_record` here are how
both store a key, so that the two cannot drift apart.

URLs: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `postgresql://...` or `postgres://...`
(a `schema=NAME` query parameter puts Turnout's tables in that schema, created when missing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, cast

from proxy.auth.keys import KeyRecord, Period
from proxy.auth.pairs import CanaryRow, OutcomeCount, PairRow
from proxy.wire.redisurl import redact_url

__all__ = [
    "Database",
    "DatabaseError",
    "KeyExistsError",
    "KeyNotFoundError",
    "SpendEntry",
    "UsageRow",
    "default_sqlite_path",
    "open_database",
]


@dataclass(frozen=True, slots=True)
class SpendEntry:
    """One finished request, as the ledger keeps it."""

    at: datetime
    key: str
    """The key's name (never its text)."""
    team: str | None
    route: str | None
    endpoint: str
    """chat, responses, embeddings, completions, files, ..."""
    model: str | None
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    cache_hit: bool
    request_id: str


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Spend grouped by key and route over a period."""

    key: str
    team: str | None
    route: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


class DatabaseError(Exception):
    """The database could not be reached or did not answer: the driver's own error is the cause."""


class KeyExistsError(Exception):
    """A key of that name exists already (revoked ones too: a name is never reused)."""


class KeyNotFoundError(Exception):
    """No key of that name."""


class Database(Protocol):
    """Where keys and spend live. Implementations raise `DatabaseError` for anything the database itself failed."""

    display_url: str
    """The URL with any user, password or secret option replaced by `***`."""

    async def open(self) -> None:
        """Connect (creating an SQLite file and its directory) and run the migrations."""

    async def close(self) -> None:
        """Release the connections."""

    async def create_key(self, record: KeyRecord) -> None:
        """Store a new key; `KeyExistsError` when its name is taken (even by a revoked key)."""

    async def keys(self) -> list[KeyRecord]:
        """All keys, revoked included, by name."""

    async def key(self, name: str) -> KeyRecord | None:
        """The key of that name, or None."""

    async def revoke(self, name: str, at: datetime) -> bool:
        """Mark the key revoked at `at`; False when there is no such key or it was revoked already."""

    async def keys_version(self) -> int:
        """A number that grows on every create and revoke: a cheap poll for replicas."""

    async def record_spend(self, entries: Sequence[SpendEntry]) -> None:
        """Append `entries` to the ledger in one transaction."""

    async def spent(self, *, since: datetime, key: str | None = None, team: str | None = None) -> Decimal:
        """The ledger's cost since `since` (inclusive), of one key and/or one team, or of all."""

    async def usage(self, *, since: datetime, key: str | None = None) -> list[UsageRow]:
        """Spend since `since` by key and route (of one key, or of all), ordered by key then route."""

    async def record_pair(self, row: PairRow) -> None:
        """Keep one evaluated pair (`proxy.auth.pairs`)."""

    async def pair_counts(self, rule: str, candidate: str, since_version: int = 0) -> list[OutcomeCount]:
        """The pairs of `rule` and `candidate` at canary versions from `since_version`, grouped.

        By version, outcome, evaluator and the judge's outcome (an audited pair's).
        """

    async def canary(self, rule: str) -> CanaryRow | None:
        """The rule's canary state, or None before it has one."""

    async def canaries(self) -> list[CanaryRow]:
        """Every rule's canary state, by rule."""

    async def put_canary(self, row: CanaryRow, expected_version: int | None) -> bool:
        """Write `row` if the stored version is `expected_version` (None: only if there is no row yet).

        False: another process changed it first (or created it): read it again.
        """


def default_sqlite_path() -> Path:
    """$TURNOUT_DATA_DIR/turnout.db, else $XDG_DATA_HOME/turnout/turnout.db, else ~/.local/share/turnout/turnout.db."""
    if os.environ.get("TURNOUT_DATA_DIR"):
        return Path(os.environ["TURNOUT_DATA_DIR"]) / "turnout.db"
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "turnout" / "turnout.db"


def open_database(url: str | None) -> Database:
    """The database `url` names (not yet opened: call `open()`); None → SQLite at `default_sqlite_path()`.

    Raises:
        ValueError: the URL is of neither kind.
    """
    if url is None:
        from proxy.auth.sqlite import SqliteDatabase

        return SqliteDatabase(default_sqlite_path())
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from proxy.auth.sqlite import SqliteDatabase

        if not url.lower().startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise ValueError("an SQLite database URL is sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return SqliteDatabase(Path(url[len("sqlite:///") :]))
    if scheme in ("postgresql", "postgres"):
        from proxy.auth.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ValueError("a database URL starts with sqlite:///, postgresql:// or postgres://")


def display(url: str) -> str:
    """`url` as logs and messages may show it."""
    return redact_url(url) or ""


# --- what both databases store a key as ----------------------------------------------------------------

KEY_COLUMNS = (
    "name, digest, prefix, created_at, team, routes, models, rpm, tpm, budget_usd, period, expires_at, revoked_at"
)


def _names(values: tuple[str, ...] | None) -> str | None:
    return None if values is None else json.dumps(list(values))


def _tuple(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(cast("list[str]", json.loads(text)))


def key_row(record: KeyRecord, time: Any, money: Any) -> tuple[Any, ...]:
    """The columns of KEY_COLUMNS for `record`; `time` and `money` turn datetimes and Decimals into the database's."""

    def optional_time(value: datetime | None) -> Any:
        return None if value is None else time(value)

    return (
        record.name,
        record.digest,
        record.prefix,
        time(record.created_at),
        record.team,
        _names(record.routes),
        _names(record.models),
        record.rpm,
        record.tpm,
        None if record.budget_usd is None else money(record.budget_usd),
        record.period,
        optional_time(record.expires_at),
        optional_time(record.revoked_at),
    )


def key_record(row: Sequence[Any], time: Any) -> KeyRecord:
    """The record of a row of KEY_COLUMNS; `time` turns the database's times back into UTC datetimes."""
    (name, digest, prefix, created_at, team, routes, models, rpm, tpm, budget, period, expires_at, revoked_at) = row
    return KeyRecord(
        name=name,
        digest=digest,
        prefix=prefix,
        created_at=time(created_at),
        team=team,
        routes=_tuple(routes),
        models=_tuple(models),
        rpm=rpm,
        tpm=tpm,
        budget_usd=None if budget is None else Decimal(budget),
        period=cast("Period | None", period),
        expires_at=None if expires_at is None else time(expires_at),
        revoked_at=None if revoked_at is None else time(revoked_at),
    )


def utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is refused (a time without a zone is a bug in the caller)."""
    if value.utcoffset() is None:
        raise ValueError("a naive datetime: Turnout's times are timezone-aware")
    return value.astimezone(UTC)


def usage_order(rows: list[UsageRow]) -> list[UsageRow]:
    """By key, then route (no route first): the same order from both databases, whatever their NULL ordering."""
    return sorted(rows, key=lambda row: (row.key, row.route is not None, row.route or "", row.team or ""))
