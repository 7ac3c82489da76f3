"""Text conditions: keywords (whole words, any case) and regular expressions on a request's messages.

Both are compiled once and searched cheaply: keywords are ruled out by a plain substring search before
the whole-word regex runs; a regex is skipped when none of the literals its matches must contain is in
the text, and runs in ASCII mode on ASCII text, where that gives the same answer.
"""

from __future__ import annotations

import importlib
import operator
import re
from collections.abc import Callable
from typing import Any

from policies.checks import Check, Condition, all_of
from policies.errors import Path, describe, invalid, require_mapping, unknown
from policies.features import RequestFeatures

__all__ = ["required_literals", "text_condition"]

# The standard library's own regex parser finds a pattern's required literals (typeshed has no stubs).
_re_parser: Any = importlib.import_module("re._parser")
_re_constants: Any = importlib.import_module("re._constants")


def _snippet(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _keywords(subject: str, get: Callable[[RequestFeatures], str], raw: object, path: Path) -> Condition:
    """Any of the keywords, as a whole word, in the lower-cased text.

    Most texts contain none of the keywords even as a substring, so a plain substring search (in C)
    rules them out before the whole-word regex runs.
    """
    words = [raw] if isinstance(raw, str) else raw
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise invalid(path, f"expected a non-empty list of keywords (non-empty strings), got {describe(raw)}")
    lowered = tuple(dict.fromkeys(word.strip().lower() for word in words))
    # Longest first, so that "refund request" wins over "refund" in explanations.
    alternatives = "|".join(re.escape(word) for word in sorted(lowered, key=len, reverse=True))
    search = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)").search

    def test(features: RequestFeatures) -> bool:
        text = get(features)
        for word in lowered:
            if word in text:
                return search(text) is not None
        return False

    def explain(features: RequestFeatures) -> Check:
        found = search(get(features))
        if found:
            return Check(True, f"{subject} contains the keyword {found.group(0)!r}")
        return Check(False, f"{subject} contains none of the keywords {list(lowered)}")

    return Condition(test, explain, f"{subject} has a keyword in {list(lowered)}")


# Where an ASCII pattern matches ASCII text differently in Unicode mode: \s and \S (Unicode counts \x1c-\x1f
# as spaces), and \N{...}, \uXXXX, \UXXXXXXXX (a non-ASCII character can match an ASCII one in any case:
# the Kelvin sign matches "k").
_UNICODE_ONLY = re.compile(r"(?<!\\)(?:\\\\)*\\[sSNuU]")


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """For each top-level alternative of `pattern`, a run of characters that every match of it contains.

    Only literal runs standing directly in an alternative count (not inside groups, classes or
    repeats), so the answer is sound: when none of them is in a text, the pattern cannot match it. None
    when some alternative has no such run, or when the pattern ignores case: then there is no shortcut.
    """
    try:
        parsed = _re_parser.parse(pattern)
    except re.error:
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    items = list(parsed)
    one_branch = len(items) == 1 and items[0][0] == _re_constants.BRANCH
    branches = items[0][1][1] if one_branch else [items]
    literals = []
    for branch in branches:
        longest, run = "", ""
        for op, value in branch:
            if op == _re_constants.LITERAL:
                run += chr(value)
                continue
            longest, run = max(longest, run, key=len), ""
        longest = max(longest, run, key=len)
        if not longest:
            return None
        literals.append(longest)
    return tuple(literals)


def _prefiltered(search: Callable[[str], re.Match[str] | None], pattern: str) -> Callable[[str], re.Match[str] | None]:
    """`search`, skipped when none of the pattern's required literals is in the text (a plain substring scan).

    Python's regex engine tries every position of the text for an alternation without a common prefix:
    17 of a 20-rule decision's 46 µs went to one such pattern over a conversation in the benchmark.
    """
    literals = required_literals(pattern)
    if not literals:
        return search
    return lambda text: search(text) if any(literal in text for literal in literals) else None


def _searcher(pattern: str, path: Path) -> Callable[[str], re.Match[str] | None]:
    r"""`re.search` for `pattern`, run in ASCII mode on ASCII text where that gives the same answer, faster.

    Unicode `\b` and `\w` are costly; on an ASCII text (`str.isascii()` is O(1)) an ASCII pattern
    matches exactly as it would in Unicode mode, unless it has one of the escapes `_UNICODE_ONLY` finds.
    """
    try:
        search = re.compile(pattern).search
    except re.error as exc:
        raise invalid(path, f"bad regular expression /{pattern}/: {exc.msg} at position {exc.pos}") from exc
    if not pattern.isascii() or _UNICODE_ONLY.search(pattern):
        return _prefiltered(search, pattern)
    try:
        search_ascii = re.compile(pattern, re.ASCII).search
    except re.error:  # an inline (?u) flag
        return _prefiltered(search, pattern)
    return _prefiltered(lambda text: (search_ascii if text.isascii() else search)(text), pattern)


def _regex(subject: str, get: Callable[[RequestFeatures], str], raw: object, path: Path) -> Condition:
    if not isinstance(raw, str) or not raw:
        raise invalid(path, f"expected a regular expression (a non-empty string), got {describe(raw)}")
    search = _searcher(raw, path)

    def explain(features: RequestFeatures) -> Check:
        found = search(get(features))
        if found:
            return Check(True, f"{subject} matches /{raw}/ at {_snippet(found.group(0))}")
        return Check(False, f"{subject} does not match /{raw}/")

    return Condition(lambda features: search(get(features)) is not None, explain, f"{subject} matches /{raw}/")


_TEXT_KEYS = ("keywords", "regex")


def text_condition(subject: str, attribute: str) -> Callable[[object, Path], Condition]:
    """The compiler of `last_user_message` / `conversation`: `keywords` and/or `regex` on the text `attribute` names.

    Keywords are searched in `<attribute>_lower`, the regex in `<attribute>_text` (both lazy, on the features).
    """
    get: Callable[[RequestFeatures], str] = operator.attrgetter(f"{attribute}_text")
    get_lower: Callable[[RequestFeatures], str] = operator.attrgetter(f"{attribute}_lower")

    def compile_text(raw: object, path: Path) -> Condition:
        entries = require_mapping(raw, path, "keywords and/or regex")
        conditions = []
        for key, value in entries.items():
            if key not in _TEXT_KEYS:
                raise unknown(path, key, _TEXT_KEYS, f"{subject} test")
            if key == "keywords":
                conditions.append(_keywords(subject, get_lower, value, (*path, key)))
            else:
                conditions.append(_regex(subject, get, value, (*path, key)))
        return all_of(conditions, " and ".join(c.label for c in conditions))

    return compile_text
