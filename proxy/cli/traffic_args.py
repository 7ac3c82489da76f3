"""What `turnout export finetune` and `turnout replay` share: the log (found as for `turnout feedback`), `--since`."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from proxy.cli.traffic import add_store_arguments, traffic_store_url
from proxy.config.errors import ConfigError
from proxy.traffic.store import TrafficStore, open_traffic_store

__all__ = ["add_log_arguments", "open_store", "parse_since", "store_url"]

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


def add_log_arguments(parser: Any) -> None:
    """`--store`, `--config`, `--database-url` (as `turnout feedback` finds the log), `--since`, `--route`, `--rule`."""
    add_store_arguments(parser)
    parser.add_argument("--since", metavar="T", help="only exchanges since T: an ISO date or time, or 7d, 24h, 30m")
    parser.add_argument("--route", metavar="R", help="only exchanges the logged policy sent to route R")
    parser.add_argument("--rule", metavar="R", help="only exchanges the logged policy decided by rule R")


def store_url(args: argparse.Namespace) -> str:
    """The store the command reads, found as `turnout feedback` finds it (`proxy.cli.traffic.traffic_store_url`).

    Raises:
        ConfigError: the config file cannot be read.
    """
    return traffic_store_url(args)


def open_store(url: str) -> TrafficStore:
    """The traffic store at `url` (not yet opened).

    Raises:
        ConfigError: `url` names no kind of store.
    """
    try:
        return open_traffic_store(url)
    except ValueError as exc:
        raise ConfigError(f"--store: {exc}") from None
