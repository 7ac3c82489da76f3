"""`turnout check`, `explain`, `test` and `tune`: a policy file checked, a decision explained, cases run, tuned.

`turnout test` prints the meaning-based scores (`similar_to`, `nearest`, `retrieval_score`) of every
rule beside each failing case; `turnout tune` is `proxy.cli.tune`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from policies import Decision
from proxy.cli.cases import Case, case_call, load_cases
from proxy.cli.tune import run_tune
from proxy.config.errors import ConfigError
from proxy.config.settings import Settings, load_settings
from proxy.decide import decide_semantically, explain_semantically
from proxy.endpoints.chat import CHAT
from proxy.semantic import open_knowledge
from proxy.wire.errors import InvalidRequestError, ProxyError
from routes import Call

__all__ = ["add_policy_commands", "run_policy_command"]


def _print(text: str = "") -> None:
    print(text)  # noqa: T201 - the command's output


def _load(path: str) -> Settings:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    return load_settings({**os.environ, "TURNOUT_CONFIG": path})


def _check(args: argparse.Namespace) -> int:
    settings = _load(args.file)
    deployment = settings.deployment
    rules = len(deployment.policy.rules) if deployment.policy is not None else 0
    routes = len(deployment.routes)
    _print(f"{args.file}: OK ({len(settings.upstreams)} upstreams, {routes} routes, {rules} rules)")
    return 0


async def _explain_decision(settings: Settings, call: Call[Any]) -> tuple[Decision, str | None]:
    """The decision, and (when rules decided) the explanation, with the meaning-based scores of the rules tried."""
    deployment = settings.deployment
    async with open_knowledge(settings) as knowledge:
        decision, explanation = await explain_semantically(
            CHAT,
            call,
            policy=deployment.policy,
            named=deployment.model_names(),
            default_route=next(iter(deployment.routes)),
            scorer=knowledge.scorer,
        )
    return decision, None if explanation is None else explanation.render()


def _request(path: str, header_args: list[str], caller: str | None) -> Call[Any]:
    """The call `turnout explain` decides on: the request file as the server would read it, and the headers.

    Raises:
        ConfigError: the file cannot be read, is not a chat request the server would accept (the
            server's own 400 message), or a `--header` has no colon.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the request file ({exc.strerror or exc})") from None
    headers: dict[str, str] = {}
    for header in header_args:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise ConfigError(f"--header {header!r}: expected NAME:VALUE")
        headers[name.strip().lower()] = value.strip()
    try:
        body = CHAT.decode(raw)
    except InvalidRequestError as exc:
        raise ConfigError(f"{path}: not a chat request Turnout would accept: {exc.message}") from None
    return Call(endpoint=CHAT, body=body, headers=headers, caller=caller)


def _explain(args: argparse.Namespace) -> int:
    settings = _load(args.file)
    call = _request(args.request, args.header, args.caller)
    decision, explanation = asyncio.run(_explain_decision(settings, call))
    if explanation is not None:
        _print(explanation)
        return 0
    _print(f"route: {decision.route}")
    _print(f"rule: {decision.rule}")
    _print(f"reason: {decision.reason} (no rule was consulted)")
    return 0


def _test(args: argparse.Namespace) -> int:
    settings = _load(args.file)
    return asyncio.run(_run_cases(settings, load_cases(args.cases)))


async def _run_cases(settings: Settings, cases: list[Case]) -> int:
    deployment = settings.deployment
    named, default_route = deployment.model_names(), next(iter(deployment.routes))
    failures = 0
    async with open_knowledge(settings) as knowledge:

        async def decide(call: Call[Any], explain: bool) -> tuple[Decision, list[str]]:
            how = explain_semantically if explain else decide_semantically
            outcome = await how(
                CHAT, call, policy=deployment.policy, named=named, default_route=default_route, scorer=knowledge.scorer
            )
            if isinstance(outcome, Decision):
                return outcome, []
            decision, explanation = outcome
            return decision, [] if explanation is None else explanation.scores()

        outcomes: list[tuple[Decision, list[str]] | ProxyError] = []
        for case in cases:
            try:
                call = case_call(case)
                decision, _ = await decide(call, explain=False)
                if _failed(case, decision) and knowledge.scorer is not None:
                    decision, scores = await decide(case_call(case), explain=True)  # the scores of the failure
                    outcomes.append((decision, scores))
                else:
                    outcomes.append((decision, []))
            except ProxyError as exc:
                outcomes.append(exc)
    for case, outcome in zip(cases, outcomes, strict=True):
        if isinstance(outcome, ProxyError):
            failures += 1
            invalid = "the request is invalid" if isinstance(outcome, InvalidRequestError) else "it failed"
            _print(f"FAIL {case.name}: {invalid}: {outcome.message}")
            continue
        decision, scores = outcome
        if _failed(case, decision):
            failures += 1
            expected = case.expect + (f" by rule '{case.rule}'" if case.rule else "")
            _print(f"FAIL {case.name}: expected {expected}, got {decision.route} by rule '{decision.rule}'")
            for line in scores:
                _print(f"       {line}")
        else:
            _print(f"ok   {case.name}: {decision.route} by rule '{decision.rule}'")
    _print(f"{len(cases) - failures} passed, {failures} failed")
    return 1 if failures else 0


def _failed(case: Case, decision: Decision) -> bool:
    return decision.route != case.expect or (case.rule is not None and decision.rule != case.rule)


def _tune(args: argparse.Namespace) -> int:
    return run_tune(args, _load(args.file), _load)


def add_policy_commands(commands: Any) -> None:
    """Register `check`, `explain`, `test` and `tune` on the CLI's subparsers."""
    check = commands.add_parser("check", help="validate a policy file (exit status 1 when it is invalid)")
    check.add_argument("file", help="the policy file (YAML)")
    explain = commands.add_parser("explain", help="show which route a request takes, and why, rule by rule")
    explain.add_argument("file", help="the policy file (YAML)")
    explain.add_argument("request", help="a chat completion request body (JSON file)")
    explain.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="a request header")
    explain.add_argument("--caller", help="the caller's name (as the x-turnout-caller header gives it)")
    test = commands.add_parser("test", help="run request → expected route cases (exit status 1 on a mismatch)")
    test.add_argument("file", help="the policy file (YAML)")
    test.add_argument("cases", help="the cases file (YAML: cases: [{name, request, expect, rule?, headers?, caller?}])")
    tune = commands.add_parser(
        "tune", help="suggest similar_to thresholds and nearest margins from labelled cases (writes only with --write)"
    )
    tune.add_argument("file", help="the policy file (YAML)")
    tune.add_argument("cases", help="the cases file, as for `turnout test`")
    tune.add_argument("--write", action="store_true", help="rewrite the suggested values in the policy file")


def run_policy_command(args: argparse.Namespace) -> int:
    """Run `check`, `explain`, `test` or `tune`; a bad policy file is reported on stderr with exit status 1."""
    command = {"check": _check, "explain": _explain, "test": _test, "tune": _tune}[args.command]
    try:
        return command(args)
    except ConfigError as exc:
        print(f"turnout {args.command}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
