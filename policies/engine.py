"""`PolicyEngine.decide(features) -> Decision`: pure, sync, first match wins, explicit default.

Everything a decision needs is prepared when the engine is built: the conditions are compiled, and
every `Decision` a rule can return is built once (one per split target, with and without the shadow
copy), so deciding is a loop over precompiled tests that returns a ready-made value. Randomness only
comes from the injected `random.Random`: for a split when the request names neither a user nor a
caller, and for sampling shadow copies.

Meaning-based conditions (`policies.semantic`) read numbers an embedding model produced outside the
engine. `decisions` (and `explanations`) decide in one pass that asks for them: a generator that yields
`semantic_needs` when a rule first needs them, takes the `SemanticFeatures` sent back and goes on from
that rule. `decide` is the plain loop, for a policy without such conditions (or features that carry
them), and the hot path stays as short as before.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Literal, TypeVar

from policies.cacherule import DEFAULT_CACHE_RULE, CacheRule
from policies.checks import NO_NEEDS, Check, Condition, SemanticNeeds, Settle, Test, all_of
from policies.decision import Decision, LogLevel
from policies.features import RequestFeatures, SemanticFeatures
from policies.nearest import Nearest

__all__ = ["Decision", "Explanation", "PolicyEngine", "Rule", "RuleTrace", "Shadow"]

Sticky = Literal["user", "caller"]
Choose = Callable[[RequestFeatures], "Decision"]
T = TypeVar("T")
Lazily = Generator[SemanticNeeds, SemanticFeatures, T]
"""A one-pass decision or explanation: yields `SemanticNeeds` at most once, is sent the `SemanticFeatures`."""


@dataclass(frozen=True, slots=True)
class Shadow:
    """A rule's shadow copy: `sample` (0 < sample <= 1) of its requests are also sent to `route`."""

    route: str
    sample: float


@dataclass(frozen=True, slots=True)
class Rule:
    """A checked rule, as `load_policy` hands it to the engine."""

    name: str
    conditions: tuple[Condition, ...]
    """All must hold; none means the rule matches every request (a catch-all)."""
    routes: tuple[tuple[str, float], ...]
    """`((route, 1),)` for a plain rule; the routes and weights of a split, in order."""
    split: bool = False
    sticky: Sticky | None = None
    """Which key a split prefers (the other is the second choice); None: the user, then the caller."""
    fallbacks: tuple[str, ...] = ()
    shadow: Shadow | None = None
    cache: CacheRule = DEFAULT_CACHE_RULE
    deadline: float | None = None
    log: LogLevel | None = None
    """What the traffic log keeps of its requests (None: the `traffic` block's `log`)."""
    nearest: Nearest | None = None
    """A `nearest` rule's routes by meaning (then `routes` lists them; its condition is the last one)."""

    @property
    def label(self) -> str:
        """The rule's conditions as they read, or "catch-all"."""
        return " and ".join(condition.label for condition in self.conditions) or "catch-all"


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """How one rule fared in `explain`: whether it matched, and the verdict of each of its conditions."""

    rule: str
    matched: bool
    checks: tuple[Check, ...]
    """One per condition key of the rule, in order (empty for a catch-all)."""
    after: bool = False
    """Explained after an earlier rule decided, to show its meaning-based scores beside the winner's."""
    meaning: tuple[bool, ...] = ()
    """For each check, whether its condition is meaning-based (its scores are what `turnout test` prints)."""


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision and, rule by rule in order up to the one that matched, why each matched or not."""

    decision: Decision
    rules: tuple[RuleTrace, ...]

    def render(self) -> str:
        """The explanation as text, for `turnout explain`: the decision, then each rule and its checks."""
        decision = self.decision
        lines = [f"route: {decision.route}", f"rule: {decision.rule}", f"reason: {decision.reason}"]
        if decision.fallbacks:
            lines.append(f"fallbacks: {', '.join(decision.fallbacks)}")
        if decision.shadow is not None:
            lines.append(f"shadow copy to: {decision.shadow}")
        lines.append("rules, in order:")
        for trace in self.rules:
            if trace.after:
                verdict = "would match" if trace.matched else "no match"
                verdict += f" (not tried: '{decision.rule}' decided; shown for its scores)"
            else:
                verdict = "matched" if trace.matched else "no match"
            lines.append(f"  {trace.rule}: {verdict}{'' if trace.checks else ' (catch-all)'}")
            lines.extend(_render_checks(trace.checks, "    "))
        return "\n".join(lines)

    def scores(self) -> list[str]:
        """The meaning-based checks of every rule explained, as `rule: why` lines (for `turnout test`)."""
        lines = []
        for trace in self.rules:
            for check, meaning in zip(trace.checks, trace.meaning, strict=True):
                if meaning:
                    lines.append(f"{trace.rule}: {check.why}")
                    lines.extend(f"{trace.rule}:   {child.why}" for child in check.children)
        return lines


def _render_checks(checks: Sequence[Check], indent: str) -> list[str]:
    lines = []
    for check in checks:
        lines.append(f"{indent}{'+' if check.matched else '-'} {check.why}")
        lines.extend(_render_checks(check.children, indent + "  "))
    return lines


# --- what a matched rule decides ---------------------------------------------------------------------------


def _sampled(plain: Decision, shadowed: Decision, sample: float, rng: random.Random) -> Choose:
    """Return `shadowed` for a `sample` share of requests, `plain` for the rest."""
    if shadowed is plain:
        return lambda features: plain
    if sample >= 1:
        return lambda features: shadowed
    draw = rng.random
    return lambda features: shadowed if draw() < sample else plain


def _variants(rule: Rule, route: str, reason: str) -> tuple[Decision, Decision]:
    """The decision for `route`, without and with the rule's shadow copy (the same object when none applies)."""
    fallbacks = tuple(name for name in rule.fallbacks if name != route)
    plain = Decision(route, rule.name, reason, fallbacks, cache=rule.cache, deadline=rule.deadline, log=rule.log)
    if rule.shadow is None or rule.shadow.route == route:
        return plain, plain
    return plain, replace(plain, shadow=rule.shadow.route)


class _Split:
    """Picks a split's route: by a stable hash of the user (or caller), so each keeps its route; else at random.

    The hash of the key places it on [0, total weight); the routes own consecutive stretches in the
    order written, so growing the last route's weight (a canary) keeps the keys it already had.
    """

    def __init__(self, rule: Rule, rng: random.Random) -> None:
        weights = [weight for _, weight in rule.routes]
        total = sum(weights)
        self._edges = list(accumulate(weights))
        self._last = len(weights) - 1
        self._total = total
        self._scale = total / 2**64
        self._prefix = rule.name.encode() + b"\0"
        self._prefer_caller = rule.sticky == "caller"
        self._random = rng.random
        sample = rule.shadow.sample if rule.shadow is not None else 1.0
        self._choosers: list[dict[str, Choose]] = []
        for route, weight in rule.routes:
            share = f"{weight / total:.0%}" if weight / total >= 0.01 else f"{weight / total:.2%}"
            by_source = {}
            for source, how in (("user", "sticky by user"), ("caller", "sticky by caller"), ("random", "random")):
                reason = f"{rule.label}; split: {route} ({share}, {how})"
                by_source[source] = _sampled(*_variants(rule, route, reason), sample, rng)
            self._choosers.append(by_source)

    def choose(self, features: RequestFeatures) -> Decision:
        """The decision for this request's share of the split."""
        if self._prefer_caller:
            key, source = (features.caller, "caller") if features.caller else (features.user, "user")
        else:
            key, source = (features.user, "user") if features.user else (features.caller, "caller")
        if key:
            digest = hashlib.blake2b(self._prefix + key.encode(), digest_size=8).digest()
            point = int.from_bytes(digest, "big") * self._scale
        else:
            point, source = self._random() * self._total, "random"
        index = min(bisect_right(self._edges, point), self._last)  # min: float rounding at the very top
        return self._choosers[index][source](features)


def _nearest_chooser(rule: Rule, nearest: Nearest, rng: random.Random) -> Choose:
    sample = rule.shadow.sample if rule.shadow is not None else 1.0
    by_route = {
        route: _sampled(*_variants(rule, route, f"{rule.label}; nearest route: {route}"), sample, rng)
        for route in nearest.routes
    }
    choose_route = nearest.choose
    return lambda features: by_route[choose_route(features)](features)


def _chooser(rule: Rule, rng: random.Random) -> Choose:
    if rule.nearest is not None:
        return _nearest_chooser(rule, rule.nearest, rng)
    if rule.split:
        return _Split(rule, rng).choose
    route = rule.routes[0][0]
    sample = rule.shadow.sample if rule.shadow is not None else 1.0
    return _sampled(*_variants(rule, route, rule.label), sample, rng)


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A rule with meaning-based conditions, as `decisions` tries it before the features are computed."""

    settle: Settle
    """The rule's verdict without them (the conditions that need no meaning tested first); None: it depends on them."""
    rest: Test
    """The rule's meaning-based conditions, tested once the features are attached (the others held)."""


def _deferred(rule: Rule) -> _Deferred | None:
    meaning = [condition for condition in rule.conditions if condition.needs]
    if not meaning:
        return None
    return _Deferred(all_of(rule.conditions, rule.label).verdict, all_of(meaning, rule.label).test)


def _without_meaning(steps: Lazily[T]) -> T:
    """What `steps` returns, when it does not ask for the meaning-based features.

    Raises:
        LookupError: it asked for them.
    """
    try:
        next(steps)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return] # StopIteration.value is untyped; `steps` returns T
    raise LookupError("the meaning-based features are not attached: explain with PolicyEngine.explanations")


# --- the engine --------------------------------------------------------------------------------------------


class PolicyEngine:
    """Decides which route a request takes: the first rule whose conditions all hold, else the default.

    Built by `load_policy` from a checked policy; pure and synchronous (no I/O, no clock).
    """

    def __init__(self, rules: Sequence[Rule], rng: random.Random) -> None:
        """Prepare `rules` (the last one a catch-all) for deciding; `rng` draws for random splits and shadows.

        Raises:
            ValueError: no rules, or the last rule has conditions (a policy needs a default).
        """
        if not rules or rules[-1].conditions:
            raise ValueError("a policy needs rules, the last one without conditions (the default)")
        self._rules = tuple(rules)
        self._choosers = tuple(_chooser(rule, rng) for rule in self._rules)
        tests = [all_of(rule.conditions, rule.label).test for rule in self._rules[:-1]]
        self._deferred = tuple(map(_deferred, self._rules))
        self._plan = tuple(zip(tests, self._choosers, strict=False))
        self._steps = tuple(zip(tests, self._choosers, self._deferred, strict=False))
        self._default = self._choosers[-1]
        self._needs = NO_NEEDS
        for rule in self._rules:
            for condition in rule.conditions:
                self._needs = self._needs | condition.needs
        self._routes = frozenset(
            name
            for rule in self._rules
            for name in (
                *(route for route, _ in rule.routes),
                *rule.fallbacks,
                *((rule.shadow.route,) if rule.shadow else ()),
            )
        )

    @property
    def semantic_needs(self) -> SemanticNeeds:
        """What the meaning-based conditions of every rule need computed (empty: none are used)."""
        return self._needs

    @property
    def rules(self) -> tuple[str, ...]:
        """The rule names, in the order they are tried."""
        return tuple(rule.name for rule in self._rules)

    @property
    def default_rule(self) -> tuple[str, str]:
        """The default (last) rule's name and its route (a split's first)."""
        last = self._rules[-1]
        return last.name, last.routes[0][0]

    @property
    def semantic_cache(self) -> bool:
        """Whether some rule's cache also matches requests by meaning (an embedder is needed)."""
        return any(rule.cache.semantic_threshold is not None for rule in self._rules)

    @property
    def route_names(self) -> frozenset[str]:
        """Every route the policy can send a request to: routes, split targets, fallbacks and shadows."""
        return self._routes

    def decide(self, features: RequestFeatures) -> Decision:
        """The decision of the first rule that matches `features` (the default rule when no other does).

        For a policy with meaning-based conditions, `features` must carry them (`with_semantic`); else
        decide with `decisions`, which asks for them only when a rule needs them.

        Raises:
            LookupError: a meaning-based condition was reached and `features` do not carry them.
        """
        for test, choose in self._plan:
            if test(features):
                return choose(features)
        return self._default(features)

    def decisions(self, features: RequestFeatures) -> Lazily[Decision]:
        """`decide` in one pass that asks for the meaning-based features when a rule first needs them.

        A rule's conditions that need no meaning are tested first. When they hold and the verdict depends
        on the meaning, the generator yields `semantic_needs` (at most once), expects the request's
        `SemanticFeatures` sent back, attaches them to `features`, and tests that rule's meaning-based
        conditions; then it goes on with the rules after it. A request an earlier rule settles never
        yields, and no rule is tried twice. It returns the `Decision`.
        """
        for test, choose, deferred in self._steps:
            if deferred is None or features.has_semantic:
                matched: bool | None = test(features)
            else:
                matched = deferred.settle(features)
                if matched is None:
                    features.with_semantic((yield self._needs))
                    matched = deferred.rest(features)
            if matched:
                return choose(features)
        return self._default(features)

    def explain(self, features: RequestFeatures) -> Explanation:
        """Decide as `decide` does, with every rule tried and every one of its conditions explained.

        Raises:
            LookupError: a rule with meaning-based conditions was reached and `features` do not carry them.
        """
        return _without_meaning(self.explanations(features))

    def explanations(self, features: RequestFeatures) -> Lazily[Explanation]:
        """`explain` in one pass that asks for the meaning-based features (as `decisions` does).

        Every condition of a rule tried is explained, so the generator asks for them on reaching the
        first rule with a meaning-based condition, whatever its other conditions say. After the rule that
        decides, the later rules with meaning-based conditions are explained too (`RuleTrace.after`), so
        the competing scores are shown; they change nothing.
        """
        traces: list[RuleTrace] = []
        decision: Decision | None = None
        for rule, choose, deferred in zip(self._rules, self._choosers, self._deferred, strict=True):
            if decision is not None and deferred is None:
                continue  # after the decision, only the rules with scores to compare
            if deferred is not None and not features.has_semantic:
                features.with_semantic((yield self._needs))
            checks = tuple(condition.explain(features) for condition in rule.conditions)
            matched = all(check.matched for check in checks)
            meaning = tuple(bool(condition.needs) for condition in rule.conditions)
            traces.append(RuleTrace(rule.name, matched, checks, after=decision is not None, meaning=meaning))
            if matched and decision is None:
                decision = choose(features)
        if decision is None:  # pragma: no cover
            raise AssertionError("unreachable: the last rule is a catch-all")
        return Explanation(decision=decision, rules=tuple(traces))

    def __repr__(self) -> str:
        return f"PolicyEngine(rules={list(self.rules)!r})"
