"""`turnout prices [MODEL]`: the price data in force, the whole table or one model's rates at every tier.

With `--config FILE` (or `TURNOUT_CONFIG`), the policy file's `prices` over the shipped table, as
`turnout serve` would price with it. Rates are shown in USD per 1M tokens, as OpenAI's pricing page lists
them (the policy file's `prices` are per 1,000 tokens); `--json` prints the same as JSON, per 1M too.
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from typing import Any

import msgspec

from proxy.accounting.cost import ModelPrice, PriceTable
from proxy.accounting.prices import PRICES_SOURCE
from proxy.config.errors import ConfigError
from proxy.config.settings import load_settings

__all__ = ["add_prices_command", "run_prices_command"]

_MILLION_PER_THOUSAND = Decimal(1000)
_TIERS = ("standard", "batch", "flex", "priority")
_COLUMNS = ("input", "cached_input", "output", "audio_input", "audio_output")


def add_prices_command(commands: Any) -> None:
    """Register `prices` on the CLI's subparsers."""
    prices = commands.add_parser("prices", help="the price data in force: the table, or one model's rates")
    prices.add_argument(
        "model", nargs="?", metavar="MODEL", help="a model name (a snapshot or ft: name finds its entry)"
    )
    prices.add_argument("--config", metavar="FILE", help="a policy file whose `prices` override the shipped table")
    prices.add_argument("--json", action="store_true", help="print JSON")


def _per_1m(rate: Decimal | None) -> str | None:
    if rate is None:
        return None
    text = f"{(rate * _MILLION_PER_THOUSAND).normalize():f}"
    return "0" if text in ("-0", "0") else text


def _rates(price: ModelPrice) -> dict[str, str | None]:
    return {column: _per_1m(getattr(price, column)) for column in _COLUMNS}


def _table(args: argparse.Namespace) -> PriceTable:
    path = args.config or os.environ.get("TURNOUT_CONFIG")
    if not path:
        return PriceTable()
    settings = load_settings({**os.environ, "TURNOUT_CONFIG": path})
    deployment = settings.deployment
    baseline = deployment.routes[deployment.baseline].model if deployment.baseline is not None else None
    return PriceTable(deployment.prices, baseline_model=baseline)


def _model(table: PriceTable, model: str) -> dict[str, Any] | None:
    entry, rates = table.entry(model), table.rates(model)
    if entry is None or rates is None:
        return None
    tiers = {tier: _rates(rates.at(tier)) for tier in _TIERS}
    return {"model": model, "entry": entry, "policy": entry in table.overridden, "per_1m_tokens": tiers}


def _print(text: str) -> None:
    print(text)  # noqa: T201 - the command's output


def run_prices_command(args: argparse.Namespace) -> int:
    """Print the table or one model; exit 1 when the model has no price, 2 when the policy file does not load."""
    try:
        table = _table(args)
    except ConfigError as exc:
        print(f"turnout prices: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    head = {"version": table.version, "source": PRICES_SOURCE, "baseline": table.baseline_model}
    if args.model is not None:
        found = _model(table, args.model)
        if found is None:
            print(f"turnout prices: no price for the model '{args.model}'", file=sys.stderr)  # noqa: T201
            return 1
        if args.json:
            _print(msgspec.json.encode({**head, **found}).decode())
            return 0
        _print(f"price data {table.version} ({PRICES_SOURCE})")
        origin = "the policy file" if found["policy"] else "the shipped table"
        _print(f"{args.model}: priced as '{found['entry']}' from {origin}; USD per 1M tokens")
        _print(_row("tier", _COLUMNS))
        for tier, rates in found["per_1m_tokens"].items():
            _print(_row(tier, [rates[column] or "-" for column in _COLUMNS]))
        return 0
    entries = [_model(table, name) for name in table.models()]
    if args.json:
        _print(msgspec.json.encode({**head, "models": entries}).decode())
        return 0
    _print(f"price data {table.version} ({PRICES_SOURCE}); standard rates, USD per 1M tokens")
    _print(_row("model", _COLUMNS))
    for found in entries:
        if found is not None:
            standard = found["per_1m_tokens"]["standard"]
            _print(_row(found["entry"], [standard[column] or "-" for column in _COLUMNS]))
    return 0


def _row(first: str, cells: Any) -> str:
    return f"{first:<34}" + "".join(f"{cell:>14}" for cell in cells)
