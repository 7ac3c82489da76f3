"""Text conditions: keywords (whole words, any case) and regular expressions on a request's messages.

Both are compiled once and searched cheaply: keywords are ruled out by a plain substring search before
the whole-word regex runs, and regexes run in ASCII mode on ASCII text, where that gives the same answer.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from policies.checks import Check, Condition, all_of
from policies.errors import Path, describe, invalid, require_mapping, unknown
from policies.features import RequestFeatures

__all__ = ["text_condition"]


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
        return search
    try:
        search_ascii = re.compile(pattern, re.ASCII).search
    except re.error:  # an inline (?u) flag
        return search
    return lambda text: (search_ascii if text.isascii() else search)(text)


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
