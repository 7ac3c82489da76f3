"""A short string that a regular expression matches: for a JSON schema's `pattern` (a Pydantic `constr`, say).

The pattern is parsed with Python's own regex parser and walked: literals as written, a class's first
member (or, negated, a character outside it), each repetition its least count (at least one), a branch's
first alternative, anchors as nothing. What the walk cannot answer for sure (lookarounds, backreferences,
a pattern over `MAX_PATTERN` characters or one that does not parse) gives None, and the caller keeps its
own text. The answer is at most `MAX_TEXT` characters; nothing is matched against the pattern, so a
hostile pattern costs no backtracking.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["MAX_PATTERN", "MAX_TEXT", "text_matching"]

MAX_PATTERN = 1_000
MAX_TEXT = 1_024
_parser: Any = importlib.import_module("re._parser")  # the stdlib's parser (typeshed does not describe it)
_constants: Any = importlib.import_module("re._constants")
_CATEGORY = {
    "CATEGORY_DIGIT": "0",
    "CATEGORY_NOT_DIGIT": "a",
    "CATEGORY_WORD": "a",
    "CATEGORY_NOT_WORD": "-",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "a",
}
_CANDIDATES = "a0A-_ .zZ9x!"


class _UnsureError(Exception):
    """The walk met what it cannot answer for sure."""


def text_matching(pattern: str) -> str | None:
    """A string `pattern` matches (searched, as JSON Schema's `pattern` is), or None when unsure."""
    if len(pattern) > MAX_PATTERN:
        return None
    try:
        parsed = _parser.parse(pattern)
        text = _walk(list(parsed), [])
    except (_UnsureError, _constants.error, RecursionError, OverflowError, ValueError):
        return None
    return text if len(text) <= MAX_TEXT else None


def _walk(items: list[Any], out: list[str]) -> str:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("b" if chr(arg) == "a" else "a")
        elif name == "ANY":
            out.append("a")
        elif name in ("IN", "CATEGORY"):
            out.append(_member(arg if name == "IN" else [(op, arg)]))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            for _ in range(min(max(low, 1) if high else 0, MAX_TEXT)):
                _walk(list(sub), out)
                if sum(map(len, out)) > MAX_TEXT:
                    raise _UnsureError
        elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
            _walk(list(arg[-1] if name == "SUBPATTERN" else arg), out)
        elif name == "BRANCH":
            _walk(list(arg[1][0]), out)
        elif name != "AT":
            raise _UnsureError  # lookarounds, backreferences, conditionals
    return "".join(out)


def _member(items: list[Any]) -> str:
    """A character of a class `[...]` (the first member; for `[^...]`, the first candidate outside it)."""
    negated = bool(items) and str(items[0][0]) == "NEGATE"
    members = items[1:] if negated else items
    if not negated:
        op, arg = members[0]
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return _CATEGORY.get(str(arg), "a")
        raise _UnsureError
    for candidate in _CANDIDATES:
        if not any(_holds(op, arg, candidate) for op, arg in members):
            return candidate
    raise _UnsureError


def _holds(op: Any, arg: Any, char: str) -> bool:
    name = str(op)
    if name == "LITERAL":
        return bool(chr(arg) == char)
    if name == "RANGE":
        return bool(arg[0] <= ord(char) <= arg[1])
    if name == "CATEGORY":
        kind = str(arg)
        tests = {"DIGIT": char.isdigit(), "WORD": char.isalnum() or char == "_", "SPACE": char.isspace()}
        held = tests.get(kind.removeprefix("CATEGORY_").removeprefix("NOT_"), True)
        return held != kind.startswith("CATEGORY_NOT_")
    return True  # what it cannot tell, it counts as held, so the candidate is not used
