"""What `turnout export finetune` and `turnout replay` share: `--store`/`--config`, `--since` (ISO or 7d/24h)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.auth.store import default_sqlite_path
from proxy.config.errors import ConfigError
from proxy.config.settings import load_settings
from proxy.traffic.log import store_url as logged_to
from proxy.traffic.store import TrafficStore, open_traffic_store

__all__ = ["add_store_arguments", "open_store", "parse_since", "store_url"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_since(text: str, now: float) -> float:
    """`--since` as unix seconds: `7d`, `24h`, `30m`, `2w` before `now`, or an ISO date or time (UTC unless it says).

    Raises:
        ConfigError: neither form.
    """
    raw = text.strip()
    relative = _RELATIVE.match(raw)
    if relative is not None:
        return now - float(relative[1]) * _SECONDS[relative[2]]
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected an ISO date or time (2026-12-01, 2026-12-01T08:00) or 7d/24h/30m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def add_store_arguments(parser: Any) -> None:
    """`--store`, `--since`, `--route` and `--rule` on a command that reads the traffic log."""
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the traffic log: sqlite:///path.db, postgresql://..., a .jsonl file or jsonl:///dir "
        "(default: where --config's server logs it, else the keys' SQLite database)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="the server's policy file, for where it logs (default $TURNOUT_CONFIG)"
    )
    parser.add_argument("--since", metavar="T", help="only exchanges since T: an ISO date or time, or 7d, 24h, 30m")
    parser.add_argument("--route", metavar="R", help="only exchanges the logged policy sent to route R")
    parser.add_argument("--rule", metavar="R", help="only exchanges the logged policy decided by rule R")


def store_url(given: str | None, config: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The store the command reads: `--store`, else where the server of `--config` logs, else the keys' SQLite.

    The server of `--config` (or `$TURNOUT_CONFIG`) logs to its `traffic.store`, else its `database_url`.

    Raises:
        ConfigError: the policy file does not load.
    """
    if given:
        return given
    path = config or environ.get("TURNOUT_CONFIG")
    if not path:
        return f"sqlite:///{default_sqlite_path()}"
    if not Path(path).is_file():
        raise ConfigError(f"--config {path}: no such file")
    deployment = load_settings({**environ, "TURNOUT_CONFIG": path}).deployment
    return logged_to(deployment.traffic, deployment.database_url)


def open_store(url: str) -> TrafficStore:
    """The traffic store at `url` (not yet opened).

    Raises:
        ConfigError: `url` names no kind of store.
    """
    try:
        return open_traffic_store(url)
    except ValueError as exc:
        raise ConfigError(f"--store: {exc}") from None
