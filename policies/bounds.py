"""Numeric bounds in conditions: `{gt, gte, lt, lte, eq}` mappings (a bare number means `eq`), checked once."""

from __future__ import annotations

import operator
from collections.abc import Callable

from policies.errors import Path, describe, invalid, require_mapping, unknown

__all__ = ["NUMERIC_OPS", "Compare", "bounds", "is_number"]

Compare = Callable[[float, float], bool]
NUMERIC_OPS: dict[str, tuple[str, Compare]] = {
    "gt": (">", operator.gt),
    "gte": (">=", operator.ge),
    "lt": ("<", operator.lt),
    "lte": ("<=", operator.le),
    "eq": ("==", operator.eq),
}
"""Operator name → (symbol, comparison)."""


def is_number(raw: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(raw, int | float) and not isinstance(raw, bool)


def bounds(raw: object, path: Path, allowed: tuple[str, ...] = tuple(NUMERIC_OPS)) -> list[tuple[str, Compare, float]]:
    """The (symbol, comparison, bound) triples of a bounds mapping, in order.

    Raises:
        PolicyError: an unknown operator or a bound that is not a number; the message and `path` say where.
    """
    if is_number(raw) and "eq" in allowed:  # `n: 2` reads as `n: {eq: 2}`
        raw = {"eq": raw}
    ops = require_mapping(raw, path, f"operators to numbers ({', '.join(allowed)})")
    checked = []
    for name, bound in ops.items():
        if name not in allowed:
            raise unknown(path, name, list(allowed), "operator")
        if not is_number(bound):
            raise invalid((*path, name), f"expected a number, got {describe(bound)}")
        symbol, compare = NUMERIC_OPS[name]
        checked.append((symbol, compare, bound))
    return checked
