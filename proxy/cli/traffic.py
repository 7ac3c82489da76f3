"""`turnout feedback REQUEST_ID [--score S] [--label L] [--comment C]`: feedback on a logged exchange.

The traffic store is `--store`, else the config file's `traffic.store` (`--config` / `TURNOUT_CONFIG`), else the
keys database (`--database-url`, `TURNOUT_DATABASE_URL`, the config file's `database_url`, else the SQLite file at
the default path): where `turnout serve` writes the log. `traffic_store_url()` is how every command that reads
the log finds it. Exit status 0; 1 when no exchange has that id (or the store fails); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
from typing import Any

from proxy.auth.store import default_sqlite_path
from proxy.cli.keys import database_url
from proxy.config.errors import ConfigError
from proxy.config.yamlsource import load_yaml
from proxy.traffic import open_traffic_store
from proxy.traffic.store import TrafficStore, TrafficStoreError

__all__ = ["add_store_arguments", "add_traffic_commands", "run_traffic_command", "traffic_store_url"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_LABEL = 200
MAX_COMMENT = 10_000


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """`--store`, `--config` and `--database-url`: what `traffic_store_url()` reads."""
    parser.add_argument("--store", metavar="URL", help="sqlite:///path.db, postgresql://..., FILE.jsonl, jsonl:///DIR")
    parser.add_argument("--config", metavar="FILE", help="config file whose traffic.store (or database_url) to use")
    parser.add_argument("--database-url", metavar="URL", help="the keys database, when the log lives there")


def add_traffic_commands(commands: Any) -> None:
    """Add `feedback` to the `turnout` parser's subcommands."""
    feedback = commands.add_parser("feedback", help="attach a score, a label and a comment to a logged exchange")
    feedback.add_argument("request_id", metavar="REQUEST_ID", help="the exchange's x-request-id")
    feedback.add_argument("--score", type=_score, metavar="S", help="a number (say 0 to 1, or -1 / 1)")
    feedback.add_argument("--label", metavar="L", help=f"a short label (at most {MAX_LABEL} characters)")
    feedback.add_argument("--comment", metavar="C", help=f"free text (at most {MAX_COMMENT} characters)")
    add_store_arguments(feedback)


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def traffic_store_url(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The traffic store a command reads: `--store`, the config's `traffic.store`, else the keys database.

    Raises:
        ConfigError: the config file cannot be read, or names an unset environment variable.
    """
    if getattr(args, "store", None):
        return str(args.store)
    config = getattr(args, "config", None) or environ.get("TURNOUT_CONFIG")
    if config:
        document = load_yaml(config)
        traffic = document.data.get("traffic") if isinstance(document.data, dict) else None
        store = traffic.get("store") if isinstance(traffic, dict) else None
        if store is not None:
            if not isinstance(store, str):
                raise document.error(("traffic", "store"), "traffic.store: a URL or a path ending .jsonl")

            def substitute(match: re.Match[str]) -> str:
                if match.group(1) not in environ:
                    raise document.error(("traffic", "store"), f"environment variable {match.group(1)} is not set")
                return environ[match.group(1)]

            return _ENV_REF.sub(substitute, store)
    return database_url(args, environ) or f"sqlite:///{default_sqlite_path()}"


def run_traffic_command(args: argparse.Namespace) -> int:
    """Run `turnout feedback ...`; returns the exit status."""
    if args.score is None and args.label is None and args.comment is None:
        return _fail("give at least one of --score, --label, --comment", 2)
    if args.label is not None and len(args.label) > MAX_LABEL:
        return _fail(f"--label: at most {MAX_LABEL} characters", 2)
    if args.comment is not None and len(args.comment) > MAX_COMMENT:
        return _fail(f"--comment: at most {MAX_COMMENT} characters", 2)
    try:
        store = open_traffic_store(traffic_store_url(args))
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc), 2)
    try:
        return asyncio.run(_feedback(store, args))
    except TrafficStoreError as exc:
        return _fail(f"traffic store: {exc}", 1)


async def _feedback(store: TrafficStore, args: argparse.Namespace) -> int:
    try:
        found = await store.feedback(args.request_id, score=args.score, label=args.label, comment=args.comment)
        if not found:
            return _fail(f"no exchange with request id {args.request_id!r} in {store.display_url}", 1)
        exchange = await store.get(args.request_id, with_content=False)
    finally:
        await store.close()
    assert exchange is not None  # noqa: S101 - it was just found
    line = {"request_id": exchange.request_id, "score": exchange.score, "label": exchange.label}
    print(json.dumps({**line, "comment": exchange.comment}, ensure_ascii=False))  # noqa: T201
    return 0


def _fail(message: str, status: int) -> int:
    print(f"turnout feedback: {message}", file=sys.stderr)  # noqa: T201
    return status
