"""`turnout tune POLICY CASES.yaml [--write]`: thresholds suggested from labelled cases, written only when asked.

The knobs are the numbers in the policy file that decide by meaning: each `similar_to` condition's
`threshold`, each `nearest` rule's `margin` and the `threshold` of its routes that have their own (the
ones the file writes; a calibrated threshold is not in the file, and changing `k` or `calibration`
would change the scores, so they are left alone). Every case is embedded once
(the knobs change no example, so the meaning-based features stay the same); then, knob by knob in the
order of the file, every candidate value is tried with the other knobs held (the ones already tuned at
their suggestion), and each is printed with what the whole policy then does on the cases:

- accuracy: cases that take the expected route (by the expected rule, when the case names one);
- misroutes: cases sent to a route they do not expect, other than the default (which is a miss);
- unknown caught: of the cases that expect the default rule (unknown traffic: `rule:` the default's
  name, or its route with no `rule:`), the share that reached it.

The suggestion is the best accuracy, then the fewest misroutes, then the value nearest the current one.
With `--write` the suggested values replace the old ones in the file's text where they stand, so its
comments and layout are kept, and the file is checked again (restored if it no longer loads).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policies import Decision, PolicyEngine, PolicyError, RequestFeatures, load_policy
from proxy.cli.cases import LOADER, Case, case_call, load_cases
from proxy.config.errors import ConfigError
from proxy.config.settings import Settings
from proxy.decide import decide_semantically
from proxy.endpoints.chat import CHAT
from proxy.semantic import open_knowledge
from proxy.wire.errors import InvalidRequestError

__all__ = ["run_tune"]

CANDIDATES = {
    "threshold": tuple(round(0.2 + 0.05 * step, 2) for step in range(15)),  # 0.2 .. 0.9
    "margin": (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1),
}


@dataclass
class Knob:
    """A number in the policy file that tuning may change."""

    label: str
    """What it is, as printed: "rule 'docs' threshold", "rule 'intents' route 'billing' threshold"."""
    kind: str
    """`threshold` or `margin`."""
    path: tuple[str | int, ...]
    """Where it is in the `rules` value."""
    start: int
    end: int
    """Its span in the file's text."""
    value: float
    suggested: float | None = None


@dataclass(frozen=True)
class Outcome:
    accuracy: float
    misroutes: int
    caught: int
    unknown: int

    def shown(self) -> str:
        caught = f"{self.caught}/{self.unknown}" if self.unknown else "no unknown cases"
        return f"accuracy {self.accuracy:6.1%}  misroutes {self.misroutes:3}  unknown caught {caught}"


def _knobs(text: str) -> list[Knob]:
    """The thresholds and margins in the file, found in its YAML nodes (for their place in the text)."""
    root = yaml.compose(text, Loader=LOADER)
    rules = next((value for key, value in root.value if key.value == "rules"), None) if root is not None else None
    knobs: list[Knob] = []
    if not isinstance(rules, yaml.SequenceNode):
        return knobs

    def walk(node: yaml.Node, path: tuple[str | int, ...], rule: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index), rule)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                kind = {"similar_to": "threshold", "nearest": "margin"}.get(key.value)
                if kind is not None and isinstance(value, yaml.MappingNode):
                    for inner_key, scalar in value.value:
                        if inner_key.value == kind and isinstance(scalar, yaml.ScalarNode):
                            start, end = scalar.start_mark.index, scalar.end_mark.index
                            where = (*path, key.value, kind)
                            knobs.append(Knob(f"{rule} {kind}", kind, where, start, end, float(scalar.value)))
                if path[-2:] == ("nearest", "routes") and isinstance(value, yaml.MappingNode):
                    knobs.extend(_route_threshold(value, (*path, key.value), f"{rule} route '{key.value}' threshold"))
                walk(value, (*path, key.value), rule)

    for index, rule_node in enumerate(rules.value):
        name = next((v.value for k, v in getattr(rule_node, "value", []) if k.value == "name"), f"#{index + 1}")
        walk(rule_node, (index,), f"rule '{name}'")
    return knobs


def _route_threshold(node: yaml.MappingNode, path: tuple[str | int, ...], label: str) -> list[Knob]:
    """A `nearest` route's own `threshold`, when the file gives one (a calibrated one is not in the file)."""
    return [
        Knob(
            label,
            "threshold",
            (*path, "threshold"),
            scalar.start_mark.index,
            scalar.end_mark.index,
            float(scalar.value),
        )
        for key, scalar in node.value
        if key.value == "threshold" and isinstance(scalar, yaml.ScalarNode)
    ]


def _set(rules: Any, path: Sequence[str | int], value: float) -> None:
    target = rules
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


@dataclass
class _Run:
    """The cases, each embedded once, and the decisions a candidate policy makes on them."""

    cases: list[Case]
    features: list[RequestFeatures | Decision]
    """The request features with the meaning attached, or the fixed decision of a case no rule decides."""
    routes: list[str]
    default: tuple[str, str]
    """The default rule's name and route."""

    def outcome(self, policy: PolicyEngine) -> Outcome:
        right = misroutes = caught = unknown = 0
        default_rule, default_route = self.default
        for case, features in zip(self.cases, self.features, strict=True):
            decision = features if isinstance(features, Decision) else policy.decide(features)
            is_unknown = case.rule == default_rule or (case.rule is None and case.expect == default_route)
            ok = decision.route == case.expect and (case.rule is None or decision.rule == case.rule)
            right += ok
            if is_unknown:
                unknown += 1
                caught += decision.rule == default_rule
            elif not ok and decision.rule != default_rule:
                misroutes += 1
        return Outcome(right / max(1, len(self.cases)), misroutes, caught, unknown)


async def _prepare(settings: Settings, cases: list[Case]) -> _Run:
    deployment = settings.deployment
    policy = deployment.policy
    if policy is None:
        raise ConfigError("the file has no rules to tune")
    named, default_route = deployment.model_names(), next(iter(deployment.routes))
    features: list[RequestFeatures | Decision] = []
    async with open_knowledge(settings) as knowledge:
        for case in cases:
            try:
                call = case_call(case)
            except InvalidRequestError as exc:
                raise ConfigError(f"case '{case.name}': not a request Turnout would accept: {exc.message}") from None
            if CHAT.requested_model(call.body) in named or knowledge.scorer is None:
                features.append(
                    await decide_semantically(
                        CHAT, call, policy=policy, named=named, default_route=default_route, scorer=knowledge.scorer
                    )
                )
                continue
            semantic = await knowledge.scorer.features(call.question)
            features.append(CHAT.features(call).with_semantic(semantic))
    return _Run(cases, features, list(deployment.routes), policy.default_rule)


def say(text: str = "") -> None:
    print(text)  # noqa: T201 - the command's output


def _suggest(knobs: list[Knob], rules: Any, run: _Run, compile_: Callable[[Any], PolicyEngine]) -> None:
    """Try each knob's candidates in turn (the others held), print them, and leave each at its suggestion."""
    for knob in knobs:
        say(f"\n{knob.label} (now {knob.value}):")
        tried: list[tuple[float, Outcome]] = []
        for value in sorted({knob.value, *CANDIDATES[knob.kind]}):
            _set(rules, knob.path, value)
            try:
                tried.append((value, run.outcome(compile_(rules))))
            except PolicyError:
                continue
        best = max(tried, key=lambda each: (each[1].accuracy, -each[1].misroutes, -abs(each[0] - knob.value)))
        for value, outcome in tried:
            say(f"  {'*' if value == best[0] else ' '} {value:<6} {outcome.shown()}")
        _set(rules, knob.path, best[0])
        knob.suggested = best[0]


def _write(path: Path, text: str, changes: list[tuple[Knob, float]], check: Callable[[str], object]) -> None:
    """Replace each changed value where it stands in `text`, write it, and check the file loads (else restore it).

    Raises:
        ConfigError: the rewritten file does not load (the old text is back).
    """
    rewritten = text
    for knob, value in sorted(changes, key=lambda change: -change[0].start):
        rewritten = rewritten[: knob.start] + f"{value:g}" + rewritten[knob.end :]
    path.write_text(rewritten, encoding="utf-8")
    try:
        check(str(path))
    except ConfigError:
        path.write_text(text, encoding="utf-8")
        raise


def run_tune(args: argparse.Namespace, settings: Settings, check: Callable[[str], object]) -> int:
    """Print each knob's candidates with their outcome, the suggestions; write them with `--write`.

    Raises:
        ConfigError: the cases file is bad, the file has no rules, or the rewritten file does not load.
    """
    path = Path(args.file)
    text = path.read_text(encoding="utf-8")
    knobs = _knobs(text)
    if not knobs:
        say(f"{args.file}: no similar_to threshold or nearest margin to tune")
        return 0
    cases = load_cases(args.cases)
    run = asyncio.run(_prepare(settings, cases))
    rules = (yaml.load(text, Loader=LOADER) or {}).get("rules")  # noqa: S506 - a safe loader

    def compile_(current: Any) -> PolicyEngine:
        return load_policy(current, run.routes, locate=lambda where: args.file)

    say(f"before: {run.outcome(compile_(rules)).shown()}")
    _suggest(knobs, rules, run, compile_)
    say(f"\nafter: {run.outcome(compile_(rules)).shown()}")
    changes = [(knob, knob.suggested) for knob in knobs if knob.suggested is not None and knob.suggested != knob.value]
    for knob, value in changes:
        say(f"suggest: {knob.label} {knob.value} -> {value}")
    if not changes:
        say("suggest: keep every value")
    elif not args.write:
        say("(nothing written; --write rewrites these values in the file)")
    else:
        _write(path, text, changes, check)
        say(f"wrote {len(changes)} value(s) to {args.file}")
    return 0
