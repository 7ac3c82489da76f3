"""Compiled conditions and their verdicts: `Condition` (a test that can explain itself), `Check`, all / any / not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from policies.features import RequestFeatures

__all__ = ["NO_NEEDS", "Check", "Condition", "SemanticNeeds", "Test", "all_of", "any_of", "not_of"]

Test = Callable[[RequestFeatures], bool]


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

    def __or__(self, other: SemanticNeeds) -> SemanticNeeds:
        return SemanticNeeds(self.examples | other.examples, self.retrieval_routes | other.retrieval_routes)

    def __bool__(self) -> bool:
        return bool(self.examples or self.retrieval_routes)


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
    """A condition that holds when every one of `conditions` holds (tested in order, stopping at a failure)."""
    tests = tuple(condition.test for condition in conditions)
    if len(tests) == 1:
        return conditions[0]
    test = _both(*tests) if len(tests) == 2 else _every(tests)

    def explain(features: RequestFeatures) -> Check:
        checks = tuple(condition.explain(features) for condition in conditions)
        held = sum(check.matched for check in checks)
        why = f"all {held} hold" if held == len(checks) else f"all: {held} of {len(checks)} hold"
        return Check(held == len(checks), why, checks)

    return Condition(test, explain, label, _needs_of(conditions))


def any_of(conditions: Sequence[Condition], label: str) -> Condition:
    """A condition that holds when at least one of `conditions` holds (tested in order, stopping at a match)."""
    tests = tuple(condition.test for condition in conditions)

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

    return Condition(test, explain, label, _needs_of(conditions))


def not_of(inner: Condition) -> Condition:
    """A condition that holds when `inner` does not."""
    inner_test = inner.test

    def explain(features: RequestFeatures) -> Check:
        check = inner.explain(features)
        why = "not: the condition does not hold" if not check.matched else "not: the condition holds"
        return Check(not check.matched, why, (check,))

    return Condition(lambda features: not inner_test(features), explain, f"not({inner.label})", inner.needs)
