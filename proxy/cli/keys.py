"""`turnout keys create | list | show | revoke | usage`: callers' keys and their spend, in the deployment's database.

The database is `--database-url`, else `TURNOUT_DATABASE_URL`, else the config file's top-level `database_url`
(`--config` / `TURNOUT_CONFIG`), else the SQLite file at the default path. `create` prints the key alone on
stdout, once (a note on stderr says so); nothing else ever shows it. Exit status 0; 1 when the key is missing
or exists already (or the database fails); 2 for bad arguments, each with one line saying what.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from proxy.auth.keys import KeyRecord, KeySpecError
from proxy.auth.operations import create_key, key_usage, list_keys, record_json, revoke_key, show_key, usage_json
from proxy.auth.store import Database, DatabaseError, KeyExistsError, KeyNotFoundError, UsageRow, open_database
from proxy.config.errors import ConfigError
from proxy.config.yamlsource import load_yaml

__all__ = ["add_keys_commands", "run_keys_command"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _UsageError(Exception):
    """A bad argument found after parsing (exit status 2)."""


def _out(text: str = "") -> None:
    print(text)  # noqa: T201 - the command's output


def _err(text: str) -> None:
    print(f"turnout keys: {text}", file=sys.stderr)  # noqa: T201 - the command's one-line message


def _moment(text: str) -> datetime:
    """`2027-01-31` (that day's UTC midnight) or an ISO-8601 time (`Z` or an offset; without one, UTC)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use a date (2027-01-31) or a time (2027-01-31T12:00:00Z)"
        ) from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list with no empty item")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least 1")
    return value


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(0)
    if not (value.is_finite() and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a positive amount in USD, like 25 or 0.50")
    return value


def add_keys_commands(commands: Any) -> None:
    """Add `keys` and its subcommands to the `turnout` parser's subcommands."""
    keys = commands.add_parser("keys", help="callers' keys: create, list, show, revoke, usage")
    keys.add_argument("--database-url", metavar="URL", help="sqlite:///path.db or postgresql://...")
    keys.add_argument("--config", metavar="FILE", help="config file whose database_url to use")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    create = action("create", "create a key and print it (once)")
    create.add_argument("name", help="the key's name: 1 to 64 of A-Z a-z 0-9 . _ -")
    create.add_argument("--team", help="the team it belongs to (for team limits and spend)")
    create.add_argument("--routes", type=_names, metavar="A,B", help="routes it may use (default: all)")
    create.add_argument("--models", type=_names, metavar="'M*,N'", help="model globs it may ask for (default: any)")
    create.add_argument("--rpm", type=_positive, metavar="N", help="requests per minute")
    create.add_argument("--tpm", type=_positive, metavar="N", help="tokens per minute")
    create.add_argument("--budget-usd", type=_usd, metavar="X", help="spend allowed per period, in USD")
    create.add_argument("--period", choices=("day", "month"), help="the budget's period (default month)")
    create.add_argument("--expires", type=_moment, metavar="DATE", help="when it stops working (UTC)")
    action("list", "list the keys (never the keys themselves)")
    action("show", "show one key").add_argument("name")
    action("revoke", "revoke a key (every replica drops it within seconds)").add_argument("name")
    usage = action("usage", "spend by key and route")
    usage.add_argument("name", nargs="?", help="only this key")
    usage.add_argument("--since", type=_moment, metavar="DATE", help="default: the start of this month (UTC)")


def database_url(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The database the command works on: flag, environment, config file, else None (the SQLite default)."""
    if args.database_url:
        return str(args.database_url)
    if environ.get("TURNOUT_DATABASE_URL"):
        return environ["TURNOUT_DATABASE_URL"]
    config = args.config or environ.get("TURNOUT_CONFIG")
    if not config:
        return None
    document = load_yaml(config)
    value = document.data.get("database_url") if isinstance(document.data, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise document.error(("database_url",), "database_url: a URL (sqlite:///... or postgresql://...)")

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) not in environ:
            raise document.error(("database_url",), f"environment variable {match.group(1)} is not set (database_url)")
        return environ[match.group(1)]

    return _ENV_REF.sub(substitute, value)


def run_keys_command(args: argparse.Namespace) -> int:
    """Run `turnout keys ...`; returns the exit status."""
    try:
        url = database_url(args)
        database = open_database(url)
    except (ConfigError, ValueError) as exc:
        _err(str(exc))
        return 2
    command = _COMMANDS[args.keys_command]
    try:
        return asyncio.run(_with_database(database, lambda: command(database, args)))
    except (KeySpecError, _UsageError) as exc:
        _err(str(exc))
        return 2
    except (KeyNotFoundError, KeyExistsError) as exc:
        _err(str(exc))
        return 1
    except (DatabaseError, RuntimeError) as exc:
        _err(f"database: {exc}")
        return 1


async def _with_database(database: Database, work: Callable[[], Awaitable[int]]) -> int:
    await database.open()
    try:
        return await work()
    finally:
        await database.close()


async def _create(database: Database, args: argparse.Namespace) -> int:
    if args.period is not None and args.budget_usd is None:
        raise _UsageError("--period needs --budget-usd")
    record, key = await create_key(
        database,
        args.name,
        team=args.team,
        routes=args.routes,
        models=args.models,
        rpm=args.rpm,
        tpm=args.tpm,
        budget_usd=args.budget_usd,
        period=args.period,
        expires_at=args.expires,
    )
    if args.json:
        _out(json.dumps({**record_json(record), "key": key}))
    else:
        _out(key)
    print(  # noqa: T201
        f"turnout keys: created {record.name!r}; this is the only time its key is shown: keep it now",
        file=sys.stderr,
    )
    return 0


def _limits(record: KeyRecord) -> str:
    limits = [f"{value} {unit}" for value, unit in ((record.rpm, "rpm"), (record.tpm, "tpm")) if value is not None]
    return ", ".join(limits) or "-"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _row(record: KeyRecord, now: datetime) -> list[str]:
    return [
        record.name,
        record.team or "-",
        record.prefix + "…",
        ",".join(record.routes) if record.routes is not None else "all",
        ",".join(record.models) if record.models is not None else "any",
        _limits(record),
        "-" if record.budget_usd is None else f"${record.budget_usd}/{record.period}",
        _when(record.expires_at),
        record.state(now),
    ]


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        _out("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


async def _list(database: Database, args: argparse.Namespace) -> int:
    records = await list_keys(database)
    now = datetime.now(UTC)
    if args.json:
        _out(json.dumps([record_json(record, now=now) for record in records]))
        return 0
    header = ["NAME", "TEAM", "PREFIX", "ROUTES", "MODELS", "LIMITS", "BUDGET", "EXPIRES", "STATE"]
    _table(header, [_row(record, now) for record in records])
    return 0


async def _show(database: Database, args: argparse.Namespace) -> int:
    record = await show_key(database, args.name)
    if args.json:
        _out(json.dumps(record_json(record)))
        return 0
    for name, value in record_json(record).items():
        shown = "-" if value is None else ",".join(value) if isinstance(value, list) else value
        _out(f"{name + ':':12} {shown}")
    return 0


async def _revoke(database: Database, args: argparse.Namespace) -> int:
    record, revoked = await revoke_key(database, args.name)
    if args.json:
        _out(json.dumps({**record_json(record), "revoked_now": revoked}))
    elif revoked:
        _out(f"revoked {record.name!r}")
    else:
        _out(f"{record.name!r} was revoked already, at {_when(record.revoked_at)}")
    return 0


def _usage_rows(rows: list[UsageRow]) -> list[list[str]]:
    cells = [
        (
            row.key,
            row.team or "-",
            row.route or "-",
            row.requests,
            row.input_tokens,
            row.output_tokens,
            f"${row.cost_usd}",
        )
        for row in rows
    ]
    return [[str(cell) for cell in line] for line in cells]


async def _usage(database: Database, args: argparse.Namespace) -> int:
    rows = await key_usage(database, args.name, since=args.since)
    if args.json:
        _out(json.dumps(usage_json(rows)))
        return 0
    _table(["KEY", "TEAM", "ROUTE", "REQUESTS", "INPUT", "OUTPUT", "COST"], _usage_rows(rows))
    total = sum((row.cost_usd for row in rows), Decimal(0))
    _out(f"total: ${total} over {sum(row.requests for row in rows)} requests")
    return 0


_COMMANDS: dict[str, Callable[[Database, argparse.Namespace], Awaitable[int]]] = {
    "create": _create,
    "list": _list,
    "show": _show,
    "revoke": _revoke,
    "usage": _usage,
}
