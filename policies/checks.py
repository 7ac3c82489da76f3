"""Compiled conditions and their verdicts: `Condition` (a test that can explain itself), `Check`, all / any / not.

A condition that reads meaning-based features (`policies.semantic`, or `all` / `any` / `not` around one)
also has a `settle`: its verdict before those features are computed, from the conditions that need no
meaning (tested first), or None when it depends on the meaning. `PolicyEngine.decisions` asks for the
features only at a None, so `any: [{has_tools: true}, {similar_to: ...}]` costs no embedding with tools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from policies.features import NearestKey, RequestFeatures

__all__ = ["NO_NEEDS", "Check", "Condition", "SemanticNeeds", "Settle", "Test", "all_of", "any_of", "not_of"]

Test = Callable[[RequestFeatures], bool]
Settle = Callable[[RequestFeatures], "bool | None"]


@dataclass(frozen=True, slots=True)
class Check:
    """How one condition fared on one request: whether it matched, why, and how its parts fared."""

    matched: bool
    why: str
    """What was compared with what, e.g. "prompt_tokens 3120 > 2500"."""
    children: tuple[Check, ...] = ()
    """The checks of the conditions inside `all`, `any`, `not` or a mapping of several keys."""


@dataclass(frozen=True, slots=True)
class SemanticNeeds:
    """What meaning-based conditions need computed for a request: example lists to compare, indexes to search."""

    examples: frozenset[tuple[str, ...]] = field(default_factory=frozenset)
    """The example lists of `similar_to` conditions (embedded once, when the policy is loaded)."""
    retrieval_routes: frozenset[str] = field(default_factory=frozenset)
    """The RAG routes `retrieval_score` conditions name."""
    nearest: frozenset[NearestKey] = field(default_factory=frozenset)
    """The routes and examples of `nearest` rules (embedded and calibrated once, when the policy is loaded)."""

    def __or__(self, other: SemanticNeeds) -> SemanticNeeds:
        return SemanticNeeds(
            self.examples | other.examples, self.retrieval_routes | other.retrieval_routes, self.nearest | other.nearest
        )

    def __bool__(self) -> bool:
        return bool(self.examples or self.retrieval_routes or self.nearest)


NO_NEEDS = SemanticNeeds()


def _needs_of(conditions: Sequence[Condition]) -> SemanticNeeds:
    needs = NO_NEEDS
    for condition in conditions:
        needs = needs | condition.needs
    return needs


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition."""

    test: Test
    """Whether a request matches: the fast path, used by `decide`."""
    explain: Callable[[RequestFeatures], Check]
    """The same verdict with its reasons, for `explain`."""
    label: str
    """How the condition reads, e.g. "prompt_tokens > 2500"; decisions quote it as their reason."""
    needs: SemanticNeeds = NO_NEEDS
    """The meaning-based features it (or a condition inside it) reads."""
    settle: Settle | None = None
    """With `needs`: the verdict before the meaning-based features are computed (None: it depends on them)."""

    def verdict(self, features: RequestFeatures) -> bool | None:
        """`settle` where the condition reads meaning-based features, else `test`: its verdict without them."""
        return self.test(features) if self.settle is None else self.settle(features)


def _cheap_first(conditions: Sequence[Condition]) -> list[Condition]:
    """`conditions`, those that need no meaning-based features first (in order), then the others (in order)."""
    return sorted(conditions, key=lambda condition: bool(condition.needs))


def _settle(conditions: Sequence[Condition], decisive: bool) -> Settle:
    """The `settle` of `all` (`decisive` False) or `any` (True): the first verdict equal to `decisive` settles it."""

    def settle(features: RequestFeatures) -> bool | None:
        unknown = False
        for condition in conditions:
            verdict = condition.verdict(features)
            if verdict is decisive:
                return decisive
            unknown = unknown or verdict is None
        return None if unknown else not decisive

    return settle


def _settle_not(inner: Settle) -> Settle:
    def settle(features: RequestFeatures) -> bool | None:
        verdict = inner(features)
        return None if verdict is None else not verdict

    return settle


def _both(first: Test, second: Test) -> Test:
    """Two conditions (the common rule): without a loop."""
    return lambda features: first(features) and second(features)


def _every(tests: tuple[Test, ...]) -> Test:
    def test(features: RequestFeatures) -> bool:
        for each in tests:  # noqa: SIM110 - a loop is 4x cheaper than all()/any() over a generator here
            if not each(features):
                return False
        return True

    return test


def all_of(conditions: Sequence[Condition], label: str) -> Condition:
    """A condition that holds when every one of `conditions` holds (tested in order, stopping at a failure).

    Those that need no meaning-based features are tested first.
    """
    if len(conditions) == 1:
        return conditions[0]
    needs = _needs_of(conditions)
    tried = _cheap_first(conditions) if needs else conditions
    tests = tuple(condition.test for condition in tried)
    test = _both(*tests) if len(tests) == 2 else _every(tests)

    def explain(features: RequestFeatures) -> Check:
        checks = tuple(condition.explain(features) for condition in conditions)
        held = sum(check.matched for check in checks)
        why = f"all {held} hold" if held == len(checks) else f"all: {held} of {len(checks)} hold"
        return Check(held == len(checks), why, checks)

    return Condition(test, explain, label, needs, _settle(tried, decisive=False) if needs else None)


def any_of(conditions: Sequence[Condition], label: str) -> Condition:
    """A condition that holds when at least one of `conditions` holds (tested in order, stopping at a match).

    Those that need no meaning-based features are tested first.
    """
    needs = _needs_of(conditions)
    tried = _cheap_first(conditions) if needs else conditions
    tests = tuple(condition.test for condition in tried)

    def test(features: RequestFeatures) -> bool:
        for each in tests:  # noqa: SIM110 - a loop is 4x cheaper than all()/any() over a generator here
            if each(features):
                return True
        return False

    def explain(features: RequestFeatures) -> Check:
        checks = tuple(condition.explain(features) for condition in conditions)
        held = sum(check.matched for check in checks)
        count = "none" if held == 0 else str(held)
        return Check(held > 0, f"any: {count} of {len(checks)} {'holds' if held == 1 else 'hold'}", checks)

    return Condition(test, explain, label, needs, _settle(tried, decisive=True) if needs else None)


def not_of(inner: Condition) -> Condition:
    """A condition that holds when `inner` does not."""
    inner_test = inner.test

    def explain(features: RequestFeatures) -> Check:
        check = inner.explain(features)
        why = "not: the condition does not hold" if not check.matched else "not: the condition holds"
        return Check(not check.matched, why, (check,))

    settle = None if inner.settle is None else _settle_not(inner.settle)
    return Condition(lambda features: not inner_test(features), explain, f"not({inner.label})", inner.needs, settle)
