"""`turnout parity` (the gate's table) and `turnout canary pin|pause|resume|reset` (a team's commands).

Both read the policy file (`--config`, else `TURNOUT_CONFIG`) for the rules' `parity:` and `canary:` blocks,
and its store (`parity_redis_url`, else `database_url` with `TURNOUT_DATABASE_URL` first) for the pairs and
canary states every replica shares. A command is a compare-and-set like the replicas' own moves; replicas
see it within their `canary_ttl`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from policies import Experiment
from proxy.auth.pairs import PairStore
from proxy.auth.store import DatabaseError
from proxy.canaries import Canaries, Standing
from proxy.config.errors import ConfigError
from proxy.config.settings import load_settings
from proxy.pairing import pair_store
from proxy.parity.canary import Action

__all__ = ["add_parity_commands", "run_parity_command"]

_COLUMNS = (
    "rule",
    "candidate",
    "reference",
    "pairs",
    "rate",
    "lower",
    "upper",
    "margin",
    "verdict",
    "step",
    "state",
    "judge",
)


def _print(text: str) -> None:
    print(text)  # noqa: T201 - the command's output


def _err(text: str) -> None:
    print(f"turnout: {text}", file=sys.stderr)  # noqa: T201


def add_parity_commands(commands: Any) -> None:
    """`parity` and `canary ...` on the CLI's subcommands."""
    parity = commands.add_parser("parity", help="the parity gate of each rule with a parity block, and its canary")
    parity.add_argument("--rule", help="only this rule")
    parity.add_argument("--json", action="store_true", help="one JSON object per rule")
    parity.add_argument("--config", metavar="FILE", help="the policy file (default: TURNOUT_CONFIG)")
    canary = commands.add_parser("canary", help="pin, pause, resume or reset a rule's canary")
    actions = canary.add_subparsers(dest="canary_command", required=True)
    for name, text in (
        ("pin", "hold the candidate at STEP percent, nothing automatic until resume or reset"),
        ("pause", "no advance (a rollback still happens)"),
        ("resume", "go on (after a rollback: with fresh evidence)"),
        ("reset", "back to the first step, the evidence started afresh"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("rule")
        if name == "pin":
            action.add_argument("step", type=int, help="percent of the rule's traffic, 0 to 100")
        action.add_argument("--config", metavar="FILE", help="the policy file (default: TURNOUT_CONFIG)")


def _experiments(args: argparse.Namespace) -> tuple[dict[str, Experiment], PairStore]:
    path = args.config or os.environ.get("TURNOUT_CONFIG")
    if not path:
        raise ConfigError("no policy file: give --config FILE or set TURNOUT_CONFIG")
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    deployment = load_settings({**os.environ, "TURNOUT_CONFIG": path}).deployment
    experiments = deployment.experiments
    if args.rule is not None and args.rule not in experiments:
        known = ", ".join(sorted(experiments)) or "none"
        raise ConfigError(f"rule {args.rule!r} has no parity block (rules with one: {known})")
    return experiments, pair_store(deployment)


async def _rows(experiments: dict[str, Experiment], database: PairStore, only: str | None) -> list[dict[str, Any]]:
    canaries = Canaries(experiments, database)
    rows = []
    for rule, experiment in experiments.items():
        if only is not None and rule != only:
            continue
        standing: Standing | None = None
        if experiment.canary is not None:
            standing = await canaries.standing(rule)
        evidence = await canaries.evidence(experiment, standing)
        result = evidence.gate
        rows.append(
            {
                "rule": rule,
                "candidate": experiment.candidate,
                "reference": experiment.reference,
                "pairs": result.pairs,
                "successes": result.successes,
                "undecided": evidence.undecided,
                "rate": result.rate,
                "lower": result.lower,
                "upper": result.upper,
                "margin": result.margin,
                "test": result.test,
                "verdict": str(result.verdict),
                "step": standing.state.share if standing is not None else None,
                "share": canaries.share(rule, standing) if standing is not None else None,
                "state": str(standing.state.status) if standing is not None else None,
                "step_pairs": evidence.step_pairs if standing is not None else None,
                "judge_pairs": evidence.judged,
                "judge_agrees": evidence.judge_agrees,
                "judge": f"{evidence.judge_agrees}/{evidence.judged}" if evidence.judged else None,
            }
        )
    return rows


def _cell(name: str, value: object) -> str:
    if value is None:
        return "-"
    if name in ("rate", "lower", "upper") and isinstance(value, float):
        return f"{value:.4f}"
    if name == "step":
        return f"{value}%"
    return str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [list(_COLUMNS), *([_cell(name, row[name]) for name in _COLUMNS] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells
    )


async def _with(database: PairStore, work: Callable[[], Awaitable[int]]) -> int:
    await database.open()
    try:
        return await work()
    finally:
        await database.close()


def _parity(args: argparse.Namespace, experiments: dict[str, Experiment], database: PairStore) -> Awaitable[int]:
    async def run() -> int:
        rows = await _rows(experiments, database, args.rule)
        if args.json:
            for row in rows:
                _print(json.dumps(row))
        elif rows:
            _print(_table(rows))
        else:
            _print("no rule has a parity block")
        return 0

    return run()


def _canary(args: argparse.Namespace, experiments: dict[str, Experiment], database: PairStore) -> Awaitable[int]:
    async def run() -> int:
        experiment = experiments[args.rule]
        if experiment.canary is None:
            _err(f"rule {args.rule!r} has a parity block but no canary")
            return 2
        canaries = Canaries(experiments, database)
        action = Action(args.canary_command)
        event = await canaries.command(args.rule, action, share=getattr(args, "step", None), who=getpass.getuser())
        standing = await canaries.standing(args.rule, fresh=True)
        state = standing.state
        said = event.reason if event is not None else "no change"
        _print(f"canary {args.rule}: {said}; now {state.share}% ({state.status}, version {state.version})")
        return 0

    return run()


def run_parity_command(args: argparse.Namespace) -> int:
    """Run `turnout parity` or `turnout canary ...`; returns the exit status."""
    try:
        experiments, database = _experiments(args)
    except (ConfigError, ValueError) as exc:
        _err(str(exc))
        return 2
    work = _canary if args.command == "canary" else _parity
    try:
        return asyncio.run(_with(database, lambda: work(args, experiments, database)))
    except ValueError as exc:
        _err(str(exc))
        return 2
    except DatabaseError as exc:
        _err(f"database: {exc}")
        return 1
