"""`PolicyError` (the message names the file, the line and the rule) and the helpers that word its messages."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Path", "PolicyError", "describe", "invalid", "require_mapping", "unknown", "where"]

Path = tuple[str | int, ...]
"""Where a value stands in the YAML: mapping keys and list indexes, e.g. `("rules", 2, "when", "model")`."""


class PolicyError(Exception):
    """A policy's rules are invalid.

    Raised by `load_policy` as `file:line: rule 'name': what is wrong`. The condition compiler raises it
    with a `path` relative to the rule and a message that spells that path out (`when.any[1].prompt_tokens:
    ...`); the loader adds the file, the line and the rule's name.
    """

    def __init__(self, message: str, *, path: Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        """Where the problem is, relative to the rule being compiled (empty when the message says it all)."""


def where(path: Path) -> str:
    """A path inside a rule as the policy author reads it: `when.any[1].prompt_tokens`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def invalid(path: Path, problem: str) -> PolicyError:
    """The error for the value at `path` (relative to the rule): "when.any[1].n: <problem>"."""
    return PolicyError(f"{where(path)}: {problem}", path=path)


def unknown(path: Path, key: object, known: Sequence[str], what: str) -> PolicyError:
    """The error for an unknown key at `path`, with the closest known key when one is close."""
    hint = difflib.get_close_matches(str(key), known, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
    return invalid((*path, str(key)), f"unknown {what} '{key}'{suggestion}; expected one of: {', '.join(known)}")


def require_mapping(raw: object, path: Path, what: str) -> Mapping[str, Any]:
    """`raw` if it is a non-empty mapping with string keys (a mapping of `what`), else the error saying so."""
    if not isinstance(raw, Mapping) or not raw:
        raise invalid(path, f"expected a non-empty mapping of {what}, got {describe(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise invalid(path, f"keys must be strings, got {key!r}")
    return raw


def describe(raw: object) -> str:
    """A YAML value as an error message shows what it got: "nothing", "an empty list", "str 'hot'"."""
    if raw is None:
        return "nothing"
    if isinstance(raw, Mapping):
        return "an empty mapping" if not raw else "a mapping"
    if isinstance(raw, list):
        return "an empty list" if not raw else "a list"
    return f"{type(raw).__name__} {raw!r}"
