"""`turnout export finetune`: the traffic log's chat exchanges as an OpenAI fine-tuning file, checked, with a holdout.

Writes `--out` (the training lines) and, beside it, `STEM.holdout.jsonl` (the held-out lines, in the same
format, to measure the fine-tune on); records the newly held-out exchanges in the register beside the log
(`proxy.traffic.holdout`); then reads the training file back and prints the checks of OpenAI's
data-preparation guide (`proxy.dataprep`). Exit status 1 when the file has format errors or the log
cannot be read, 0 otherwise (a warning, such as too few examples, is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from proxy.auth.store import DatabaseError
from proxy.cli.traffic_args import add_log_arguments, open_store, parse_since, store_url
from proxy.config.errors import ConfigError
from proxy.dataprep import check_training_file
from proxy.traffic.finetune import TrainingLine
from proxy.traffic.holdout import open_holdout_register, parse_share
from proxy.traffic.store import TrafficStoreError
from proxy.traffic.training import Selection, select_training

__all__ = ["add_export_command", "holdout_path", "run_export_command"]

DEFAULT_BASE_MODEL = "gpt-4o-mini-2024-07-18"
"""The base model whose limit and training price the checks use unless `--base-model` names another."""


def _print(text: str = "") -> None:
    print(text)  # noqa: T201 - the command's output


def add_export_command(commands: Any) -> None:
    """Register `export finetune` on the CLI's subparsers."""
    export = commands.add_parser("export", help="export the traffic log")
    kinds = export.add_subparsers(dest="export_kind", required=True)
    finetune = kinds.add_parser(
        "finetune",
        help="chat exchanges as an OpenAI fine-tuning file (JSONL), checked, with a deterministic holdout",
    )
    add_log_arguments(finetune)
    finetune.add_argument("--out", required=True, metavar="FILE", help="the training file to write (JSONL)")
    finetune.add_argument("--min-score", type=float, metavar="S", help="only exchanges whose feedback score >= S")
    finetune.add_argument(
        "--holdout", default="10%", metavar="SHARE", help="share held out for evaluation: 10%% or 0.1 (default 10%%)"
    )
    finetune.add_argument("--dedupe", action="store_true", help="one example per prompt (the best-scored)")
    finetune.add_argument(
        "--base-model", default=DEFAULT_BASE_MODEL, help=f"the model to fine-tune (default {DEFAULT_BASE_MODEL})"
    )
    finetune.add_argument("--epochs", type=int, metavar="N", help="epochs for the cost estimate (default: OpenAI's)")
    finetune.add_argument("--training-price", metavar="USD", help="USD per 1M training tokens (default: the table's)")


def holdout_path(out: Path) -> Path:
    """The holdout file beside the training file: `train.jsonl` → `train.holdout.jsonl`."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.holdout.jsonl")


def _write(path: Path, lines: list[TrainingLine]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")


async def _select(args: argparse.Namespace, url: str, share: float) -> tuple[Selection, str]:
    since = None if args.since is None else parse_since(args.since, time.time())
    register = open_holdout_register(url)
    store = open_store(url)
    try:
        held = await register.held()
        exchanges = [
            exchange
            async for exchange in store.exchanges(since=since, route=args.route, rule=args.rule, with_content=True)
        ]
    finally:
        await store.close()
    selection = select_training(exchanges, held=held, share=share, min_score=args.min_score, dedupe=args.dedupe)
    await register.add(selection.newly_held, datetime.now(UTC))
    return selection, register.where


def _finetune(args: argparse.Namespace) -> int:
    share = parse_share(args.holdout)
    price = None
    if args.training_price is not None:
        try:
            price = Decimal(args.training_price)
        except InvalidOperation:
            raise ConfigError(f"--training-price {args.training_price!r}: expected USD per 1M tokens") from None
    url = store_url(args)
    selection, register = asyncio.run(_select(args, url, share))
    out = Path(args.out)
    _write(out, selection.train)
    _write(holdout_path(out), selection.holdout)
    _print(f"wrote {len(selection.train)} training examples to {out}")
    _print(
        f"wrote {len(selection.holdout)} held-out examples to {holdout_path(out)} "
        f"({len(selection.newly_held)} newly held out, recorded in {register})"
    )
    for reason, count in sorted(selection.skipped.items(), key=lambda item: (-item[1], item[0])):
        _print(f"skipped {count}: {reason}")
    with out.open(encoding="utf-8") as written:
        lines = [json.loads(line) for line in written if line.strip()]
    report = check_training_file(lines, base_model=args.base_model, epochs=args.epochs, price_per_1m=price)
    for line in report.render():
        _print(line)
    return 1 if report.format_errors else 0


def run_export_command(args: argparse.Namespace) -> int:
    """Run `export finetune`; a bad argument or an unreadable log is reported on stderr with exit status 1."""
    try:
        return _finetune(args)
    except (ConfigError, ValueError) as exc:
        print(f"turnout export: {exc}", file=sys.stderr)  # noqa: T201
    except (TrafficStoreError, DatabaseError) as exc:
        print(f"turnout export: cannot read the traffic log: {exc}", file=sys.stderr)  # noqa: T201
    except OSError as exc:  # a file that cannot be written (or read)
        print(f"turnout export: {exc}", file=sys.stderr)  # noqa: T201
    return 1
