"""The key operations as plain async functions over a `Database`, and their JSON: what the CLI and the admin API run.

Both front ends do the same thing through here, so they cannot differ: `create_key` makes the key text and
returns it once (only its digest is stored), `revoke_key` says whether it revoked or found the key revoked
already, `key_usage` defaults to the current month. The JSON never holds a digest, and money is a string
(a decimal, exact), times ISO-8601 UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from proxy.auth.keys import PREFIX_LENGTH, KeyRecord, KeySpecError, Period, digest_of, new_key, period_start
from proxy.auth.store import Database, KeyNotFoundError, UsageRow

__all__ = [
    "create_key",
    "key_usage",
    "list_keys",
    "record_json",
    "revoke_key",
    "show_key",
    "usage_json",
]


async def create_key(
    database: Database,
    name: str,
    *,
    team: str | None = None,
    routes: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_usd: Decimal | None = None,
    period: Period | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[KeyRecord, str]:
    """Make and store a new key; returns its record and its text (shown once, never stored).

    A budget without a period is a monthly one.

    Raises:
        KeySpecError: the name, a limit or the expiry is not valid (the expiry is in the past).
        KeyExistsError: the name is taken (revoked keys included).
    """
    created_at = now or datetime.now(UTC)
    if expires_at is not None and expires_at.utcoffset() is not None and expires_at <= created_at:
        raise KeySpecError("the expiry is in the past")
    key = new_key()
    record = KeyRecord(
        name=name,
        digest=digest_of(key.encode()),
        prefix=key[:PREFIX_LENGTH],
        created_at=created_at,
        team=team,
        routes=None if routes is None else tuple(routes),
        models=None if models is None else tuple(models),
        rpm=rpm,
        tpm=tpm,
        budget_usd=budget_usd,
        period=(period or "month") if budget_usd is not None else period,
        expires_at=expires_at,
    )
    await database.create_key(record)
    return record, key


async def list_keys(database: Database) -> list[KeyRecord]:
    """Every key, revoked ones included, by name."""
    return await database.keys()


async def show_key(database: Database, name: str) -> KeyRecord:
    """The key named `name`.

    Raises:
        KeyNotFoundError: there is none.
    """
    record = await database.key(name)
    if record is None:
        raise KeyNotFoundError(f"no key named {name!r}")
    return record


async def revoke_key(database: Database, name: str, *, now: datetime | None = None) -> tuple[KeyRecord, bool]:
    """Revoke the key named `name`; returns its record and whether it was revoked now (False: it was already).

    Raises:
        KeyNotFoundError: there is none.
    """
    revoked = await database.revoke(name, now or datetime.now(UTC))
    return await show_key(database, name), revoked


async def key_usage(
    database: Database, name: str | None = None, *, since: datetime | None = None, now: datetime | None = None
) -> list[UsageRow]:
    """Spend by key and route since `since` (default: the start of the current UTC month), of one key or all.

    Raises:
        KeyNotFoundError: `name` names no key.
    """
    if name is not None:
        await show_key(database, name)
    start = since or period_start("month", now or datetime.now(UTC))
    return await database.usage(since=start, key=name)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def record_json(record: KeyRecord, *, now: datetime | None = None) -> dict[str, Any]:
    """The key as JSON (its state at `now`, default the present): everything but the digest."""
    return {
        "name": record.name,
        "team": record.team,
        "prefix": record.prefix,
        "created_at": _time(record.created_at),
        "routes": None if record.routes is None else list(record.routes),
        "models": None if record.models is None else list(record.models),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "budget_usd": None if record.budget_usd is None else str(record.budget_usd),
        "period": record.period,
        "expires_at": _time(record.expires_at),
        "revoked_at": _time(record.revoked_at),
        "state": record.state(now or datetime.now(UTC)),
    }


def usage_json(rows: Sequence[UsageRow]) -> list[dict[str, Any]]:
    """Usage rows as JSON, cost as an exact decimal string."""
    return [
        {
            "key": row.key,
            "team": row.team,
            "route": row.route,
            "requests": row.requests,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "cost_usd": str(row.cost_usd),
        }
        for row in rows
    ]
