"""`turnout check`, `turnout explain` and `turnout test`: a policy file checked, a decision explained, cases run."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from policies import Decision
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


def _call(body: Mapping[str, Any], headers: Mapping[str, str], caller: str | None) -> Call[Any]:
    raw = msgspec.json.encode(body)
    lowered = {name.lower(): value for name, value in headers.items()}
    return Call(endpoint=CHAT, body=CHAT.decode(raw), headers=lowered, caller=caller)


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


class _Case(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    request: dict[str, Any]
    expect: str
    """The route the request must take."""
    rule: str | None = None
    """The rule that must send it there, when given."""
    headers: dict[str, str] = {}
    caller: str | None = None


class _Cases(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cases: list[_Case]


def _test(args: argparse.Namespace) -> int:
    settings = _load(args.file)
    try:
        cases = msgspec.convert(yaml.safe_load(Path(args.cases).read_text(encoding="utf-8")), _Cases)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{args.cases}: not a cases file: {exc}") from exc
    return asyncio.run(_run_cases(settings, cases))


async def _run_cases(settings: Settings, cases: _Cases) -> int:
    deployment = settings.deployment
    named, default_route = deployment.model_names(), next(iter(deployment.routes))
    failures = 0
    async with open_knowledge(settings) as knowledge:
        outcomes: list[Decision | ProxyError] = []
        for case in cases.cases:
            try:
                call = _call(case.request, case.headers, case.caller)
                outcomes.append(
                    await decide_semantically(
                        CHAT,
                        call,
                        policy=deployment.policy,
                        named=named,
                        default_route=default_route,
                        scorer=knowledge.scorer,
                    )
                )
            except ProxyError as exc:
                outcomes.append(exc)
    for case, decision in zip(cases.cases, outcomes, strict=True):
        if isinstance(decision, ProxyError):
            failures += 1
            invalid = "the request is invalid" if isinstance(decision, InvalidRequestError) else "it failed"
            _print(f"FAIL {case.name}: {invalid}: {decision.message}")
            continue
        wrong_rule = case.rule is not None and decision.rule != case.rule
        if decision.route != case.expect or wrong_rule:
            failures += 1
            expected = case.expect + (f" by rule '{case.rule}'" if case.rule else "")
            _print(f"FAIL {case.name}: expected {expected}, got {decision.route} by rule '{decision.rule}'")
        else:
            _print(f"ok   {case.name}: {decision.route} by rule '{decision.rule}'")
    _print(f"{len(cases.cases) - failures} passed, {failures} failed")
    return 1 if failures else 0


def add_policy_commands(commands: Any) -> None:
    """Register `check`, `explain` and `test` on the CLI's subparsers."""
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


def run_policy_command(args: argparse.Namespace) -> int:
    """Run `check`, `explain` or `test`; a bad policy file is reported on stderr with exit status 1."""
    command = {"check": _check, "explain": _explain, "test": _test}[args.command]
    try:
        return command(args)
    except ConfigError as exc:
        print(f"turnout {args.command}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
