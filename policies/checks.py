"""Compiled conditions and their verdicts: `Condition` (a test that can explain itself), `Check`, all / any / not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from policies.features import RequestFeatures

__all__ = ["Check", "Condition", "Test", "all_of", "any_of", "not_of"]

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
class Condition:
    """A compiled condition."""

    test: Test
    """Whether a request matches: the fast path, used by `decide`."""
    explain: Callable[[RequestFeatures], Check]
    """The same verdict with its reasons, for `explain`."""
    label: str
    """How the condition reads, e.g. "prompt_tokens > 2500"; decisions quote it as their reason."""


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

    return Condition(test, explain, label)


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

    return Condition(test, explain, label)


def not_of(inner: Condition) -> Condition:
    """A condition that holds when `inner` does not."""
    inner_test = inner.test

    def explain(features: RequestFeatures) -> Check:
        check = inner.explain(features)
        why = "not: the condition does not hold" if not check.matched else "not: the condition holds"
        return Check(not check.matched, why, (check,))

    return Condition(lambda features: not inner_test(features), explain, f"not({inner.label})")
