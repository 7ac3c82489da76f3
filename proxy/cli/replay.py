"""`turnout replay --policy CANDIDATE.yaml`: the logged traffic decided and priced by a candidate policy, offline.

Prints, per rule and route of the candidate, the requests, those moved from another route, the projected
cost, the logged (current) cost and baseline, and the savings against each (`proxy.replay`); then the
moves (logged route → candidate route) and what could not be decided or priced. `--json` prints the same
as one JSON object (money as decimal strings). `--execute --sample N` also sends N of the requests to the
candidate routes (`proxy.replay_sample`) and writes their answers beside the originals to `--out`
(default: `STEM.replays.jsonl` beside a JSONL log, else `turnout.replays.jsonl` in the current directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from proxy.accounting.cost import PriceTable
from proxy.auth.store import DatabaseError
from proxy.cli.traffic_args import add_log_arguments, open_store, parse_since, store_url
from proxy.config.errors import ConfigError
from proxy.config.settings import Settings, load_settings
from proxy.replay import Decided, Replay, RouteTotals
from proxy.replay_pairs import pair_replays
from proxy.replay_sample import Sample, run_sample
from proxy.semantic import open_knowledge
from proxy.traffic.store import TrafficStoreError

__all__ = ["add_replay_command", "replays_path", "run_replay_command"]


def _print(text: str = "") -> None:
    print(text)  # noqa: T201 - the command's output


def add_replay_command(commands: Any) -> None:
    """Register `replay` on the CLI's subparsers."""
    replay = commands.add_parser(
        "replay", help="decide and price the logged traffic with a candidate policy (no upstream called)"
    )
    replay.add_argument("--policy", required=True, metavar="FILE", help="the candidate policy file (YAML)")
    add_log_arguments(replay)
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.add_argument("--execute", action="store_true", help="also send a sample to the candidate routes")
    replay.add_argument("--sample", type=int, default=20, metavar="N", help="requests sent with --execute (20)")
    replay.add_argument("--out", metavar="FILE", help="where --execute writes the answers (JSONL)")
    replay.add_argument("--timeout", type=float, default=120.0, metavar="S", help="per sent request (120)")


def replays_path(store: str, out: str | None) -> Path:
    """Where `--execute` writes: `--out`, else `STEM.replays.jsonl` beside a JSONL log, else in the current dir."""
    if out is not None:
        return Path(out)
    if store.endswith(".jsonl") and "://" not in store:
        log = Path(store)
        return log.with_name(f"{log.name[: -len('.jsonl')]}.replays.jsonl")
    return Path("turnout.replays.jsonl")


def _prices(settings: Settings) -> PriceTable:
    deployment = settings.deployment
    baseline = deployment.routes[deployment.baseline].model if deployment.baseline is not None else None
    return PriceTable(deployment.prices, baseline_model=baseline)


async def _replay(args: argparse.Namespace, settings: Settings, url: str) -> tuple[Replay, list[Decided]]:
    since = None if args.since is None else parse_since(args.since, time.time())
    store = open_store(url)
    sample = Sample(args.sample if args.execute else 0)
    try:
        async with open_knowledge(settings) as knowledge:
            replay = Replay(settings, _prices(settings), knowledge.scorer)
            exchanges = store.exchanges(since=since, route=args.route, rule=args.rule, with_content=True)
            async for exchange in exchanges:
                item = await replay.decide(exchange)
                if item is not None:
                    replay.add(item)
                    sample.offer(item)
    finally:
        await store.close()
    return replay, sample.items()


def _money(value: Decimal) -> str:
    return f"{value:.6f}"


def _row_json(rule: str, route: str, row: RouteTotals) -> dict[str, Any]:
    return {
        "rule": rule,
        "route": route,
        "requests": row.requests,
        "moved": row.moved,
        "unpriced": row.unpriced,
        "projected_usd": str(row.projected),
        "current_usd": str(row.current),
        "baseline_usd": str(row.baseline),
        "savings_vs_baseline_usd": str(row.savings_vs_baseline),
        "savings_vs_current_usd": str(row.savings_vs_current),
    }


def _as_json(replay: Replay) -> dict[str, Any]:
    rows = [_row_json(rule, route, row) for (rule, route), row in sorted(replay.rows.items())]
    return {
        "prices_version": replay.prices.version,
        "rows": rows,
        "total": _row_json("*", "*", replay.total()),
        "moves": [{"from": a, "to": b, "requests": n} for (a, b), n in sorted(replay.flows.items())],
        "undecided": dict(sorted(replay.undecided.items())),
        "unpriced_models": dict(sorted(replay.unpriced_models.items())),
    }


def _render(replay: Replay) -> None:
    header = (
        "rule",
        "route",
        "requests",
        "moved",
        "projected $",
        "current $",
        "baseline $",
        "vs baseline",
        "vs current",
    )
    table = [header]
    items = [*sorted(replay.rows.items()), (("total", ""), replay.total())]
    for (rule, route), row in items:
        table.append(
            (
                rule,
                route,
                str(row.requests),
                str(row.moved),
                _money(row.projected),
                _money(row.current),
                _money(row.baseline),
                _money(row.savings_vs_baseline),
                _money(row.savings_vs_current),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = [
            cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        _print("  ".join(cells).rstrip())
    _print(f"(savings: baseline or current minus projected; prices {replay.prices.version})")
    for (source, target), count in sorted(replay.flows.items()):
        _print(f"moved {count}: {source} -> {target}")
    for reason, count in sorted(replay.undecided.items()):
        why = "no content logged (needed to decide)" if reason == "no content" else reason
        _print(f"not decided {count}: {why}")
    unpriced = replay.total().unpriced
    if unpriced:
        models = ", ".join(f"{m} ({n})" for m, n in sorted(replay.unpriced_models.items())) or "no usage logged"
        _print(f"not priced {unpriced}: {models}")


def _run(args: argparse.Namespace) -> int:
    if not Path(args.policy).is_file():
        raise ConfigError(f"{args.policy}: no such file")
    if args.sample < 1:
        raise ConfigError("--sample: at least 1")
    settings = load_settings({**os.environ, "TURNOUT_CONFIG": args.policy})
    url = store_url(args)
    replay, decided = asyncio.run(_replay(args, settings, url))
    report = _as_json(replay)
    if args.execute:
        out = replays_path(url, args.out)
        sent = asyncio.run(run_sample(decided, settings, replay.prices, seconds=args.timeout))
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as lines:
            for item in sent:
                lines.write(json.dumps(item.row, ensure_ascii=False) + "\n")
        answered = sum(item.row.get("status") == 200 for item in sent)
        report["executed"] = {"sent": len(sent), "answered": answered, "out": str(out)}
        if settings.deployment.experiments:
            paired = asyncio.run(pair_replays(settings, decided, sent))
            pairs: dict[str, dict[str, int]] = {}
            for (rule, outcome), count in sorted(paired.stored.items()):
                pairs.setdefault(rule, {})[outcome] = count
            report["executed"]["pairs"] = pairs
    if args.json:
        _print(json.dumps(report, indent=2))
        return 0
    _render(replay)
    if args.execute:
        executed = report["executed"]
        _print(f"executed {executed['sent']} ({executed['answered']} answered): written to {executed['out']}")
        for rule, outcomes in executed.get("pairs", {}).items():
            counts = ", ".join(f"{outcome} {count}" for outcome, count in outcomes.items())
            _print(f"parity pairs stored for rule {rule}: {counts} (see turnout parity)")
    return 0


def run_replay_command(args: argparse.Namespace) -> int:
    """Run `replay`; a bad policy file, argument or unreadable log is reported on stderr with exit status 1."""
    try:
        return _run(args)
    except (ConfigError, ValueError) as exc:
        print(f"turnout replay: {exc}", file=sys.stderr)  # noqa: T201
    except (TrafficStoreError, DatabaseError) as exc:
        print(f"turnout replay: cannot read the traffic log: {exc}", file=sys.stderr)  # noqa: T201
    except OSError as exc:  # a file that cannot be written (or read)
        print(f"turnout replay: {exc}", file=sys.stderr)  # noqa: T201
    return 1
