"""`Redaction`: what the traffic log removes from the content it keeps, before it keeps it.

Turnout's own secrets go first, by value (`proxy.wire.redaction.Redactor`); then the patterns. A body is redacted
in its JSON text, one pass of each pattern over all of it, when that is safe: the defaults are written so that a
JSON escape (a newline, a quote) next to a match changes nothing, a text with unicode escapes (which could hide where
a match starts) is never done so, and a text that no longer reads as JSON afterwards is done again the slow way:
decoded, every string on its own. The configured patterns always see the strings decoded (they may match quotes).
The defaults: e-mail addresses, phone numbers, card numbers (those that pass the Luhn check) and API keys
(`sk-...`, `tk-...`, bearer tokens); each becomes a placeholder that says what it was (`[email]`, `[phone]`,
`[card]`, `[key]`); a configured pattern's match becomes `[redacted]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from proxy.config.sections import RedactSettings
from proxy.wire.redaction import Redactor

__all__ = ["DEFAULT_PATTERNS", "Redaction"]

DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("key", r"(?i)(?:sk|tk)-[A-Za-z0-9_\-]{16,}|bearer(?:\s|\\[nrt])+[A-Za-z0-9._\-~+/]{8,}=*"),
    ("email", r"(?<![A-Za-z0-9._%+\-\\])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
    ("card", r"(?<![\d-])\d(?:[ \-]?\d){12,18}(?![\d-])"),
    (
        "phone",
        r"(?:(?<![\w+])|(?<=\\[nrtbf]))"
        r"(?:(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}[ .\-]\d{3,4}(?:[ .\-]?\d{2,4})?|\+\d{8,14})(?!\w)",
    ),
)
"""(name, pattern): what `defaults: true` removes; the name is the placeholder's (`[email]`)."""
_CUSTOM = "[redacted]"
_DECODER = msgspec.json.Decoder()


def _card(match: re.Match[str]) -> str:
    """`[card]` for a number that passes the Luhn check; any other stays."""
    return "[card]" if _luhn(re.sub(r"[ \-]", "", match.group(0))) else match.group(0)


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


_ASCII_CLASSES = {"\\d": ("[0-9]", "0-9"), "\\D": ("[^0-9]", None), "\\w": ("[A-Za-z0-9_]", "A-Za-z0-9_")}
r"""`\d`, `\D`, `\w` as explicit ASCII classes, outside a class and inside one."""


def _ascii_classes(pattern: str) -> str:
    r"""`pattern` with `\d`, `\D` and `\w` spelt as ASCII classes: the same matches in an ASCII text, twice as fast.

    Python's `re` tests `\d` and `\w` as categories, a character at a time (with `re.ASCII` too), and an explicit
    class as a bitmap; a text that is all ASCII (`str.isascii()`, known at once) is searched with this spelling.
    """
    out, in_class, index = [], False, 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escape = pattern[index : index + 2]
            spelt = _ASCII_CLASSES.get(escape, (escape, escape))[in_class]
            if spelt is None:
                raise ValueError(f"{escape} inside a class has no ASCII spelling here: {pattern}")
            out.append(spelt)
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        index += 1
    return "".join(out)


class _Pattern:
    r"""A compiled pattern and its ASCII spelling (`_ascii_classes`), each used on the texts it is right for.

    Only the default patterns are respelt (`respell`): they are written for it and tested against their
    spelling; a configured pattern may use a class syntax (`[]...]`, `[\D]`) the respelling does not read.
    """

    __slots__ = ("ascii", "unicode")

    def __init__(self, pattern: str, *, respell: bool = True) -> None:
        self.unicode = re.compile(pattern)
        self.ascii = re.compile(_ascii_classes(pattern)) if respell else self.unicode

    def of(self, text: str) -> re.Pattern[str]:
        return self.ascii if text.isascii() else self.unicode


_TWO_DIGITS = _Pattern(r"\d\D?\d")
_NUMBERISH = _Pattern(r"[+(\d][\d .()\-]{4,}\d")
"""Where a card or a phone number can be: a run of digits and separators. The card and phone patterns look at
most two characters before a match and one after, so each is applied to each run with that much around it (one
fast pass over the text instead of two slow ones)."""
_ANY_HINT = re.compile(r"(?i)[@\d]|sk-|tk-|bearer")
"""A text with none of these holds nothing a default pattern matches: one search, then nothing else."""
_KEY_HINTS = ("sk-", "tk-", "bearer")


def _has_key_hint(text: str) -> bool:
    lowered = text.lower()
    return any(hint in lowered for hint in _KEY_HINTS)


def _has_at(text: str) -> bool:
    return "@" in text


def _has_digits(text: str) -> bool:
    return _TWO_DIGITS.of(text).search(text) is not None


_HINTS: dict[str, Callable[[str], bool]] = {
    "key": _has_key_hint,
    "email": _has_at,
    "card": _has_digits,
    "phone": _has_digits,
}
"""What a text must hold for each default pattern to have a chance: a string without it is not searched."""


class _Rule:
    """One default pattern (with its hint), or every configured one combined."""

    __slots__ = ("hint", "pattern", "replace")

    def __init__(self, name: str, pattern: str) -> None:
        self.pattern = _Pattern(pattern, respell=bool(name))  # a default pattern (named), or the configured ones
        self.hint = _HINTS.get(name)
        placeholder = f"[{name}]" if name else _CUSTOM
        self.replace: str | Callable[[re.Match[str]], str] = _card if name == "card" else placeholder

    def apply(self, text: str) -> str:
        if self.hint is not None and not self.hint(text):
            return text
        return self.pattern.of(text).sub(self.replace, text)


class _Numbers:
    """The card and phone rules together, each applied to the runs of digits `_NUMBERISH` finds."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[_Rule]) -> None:
        self.rules = rules

    def _window(self, match: re.Match[str]) -> str:
        run = match.group(0)
        if run.isdigit() and not 13 <= len(run) <= 19:  # no separator, no card's length: no card, no phone (an id)
            return run
        whole, start, end = match.string, match.start(), match.end()
        before, after = whole[max(start - 2, 0) : start], whole[end : end + 1]
        window = before + run + after
        for rule in self.rules:
            window = rule.pattern.of(window).sub(rule.replace, window)
        return window[len(before) : len(window) - len(after)]

    def apply(self, text: str) -> str:
        return _NUMBERISH.of(text).sub(self._window, text)


class Redaction:
    """Removes Turnout's secrets and the configured patterns from every string of a JSON value."""

    def __init__(self, settings: RedactSettings, secrets: Redactor | None = None) -> None:
        rules = [_Rule(name, pattern) for name, pattern in DEFAULT_PATTERNS] if settings.defaults else []
        numbers = [rule for rule in rules if rule.hint is _has_digits]
        others: list[_Rule | _Numbers] = [rule for rule in rules if rule.hint is not _has_digits]
        self._defaults = tuple([*others, _Numbers(numbers)] if numbers else others)
        self._custom = (
            _Rule("", "|".join(f"(?:{_scoped(pattern)})" for pattern in settings.patterns))
            if settings.patterns
            else None
        )
        self._secrets = secrets if secrets else None
        names = [name for name, _ in DEFAULT_PATTERNS] if settings.defaults else []
        self.placeholders = tuple(sorted({*(f"[{name}]" for name in names), *([_CUSTOM] if settings.patterns else [])}))
        """The placeholders it writes."""

    def text(self, text: str) -> str:
        """`text` without the secrets and the patterns' matches."""
        if self._secrets is not None:
            text = self._secrets.values(text)
        if self._defaults and _ANY_HINT.search(text) is not None:
            for rule in self._defaults:
                text = rule.apply(text)
        return text if self._custom is None else self._custom.apply(text)

    def document(self, raw: bytes) -> Any:
        """The JSON document `raw`, decoded and redacted (None when it is not JSON)."""
        if not raw or raw[:1] not in (b"{", b"["):
            return None
        try:
            if b"\\u" not in raw:
                text = raw.decode()
                if self._secrets is not None:
                    text = self._secrets.values(text)
                if self._defaults and _ANY_HINT.search(text) is not None:
                    for rule in self._defaults:
                        text = rule.apply(text)
                try:
                    value = _DECODER.decode(text)
                except msgspec.DecodeError:  # the redaction broke the JSON: the slow way below
                    pass
                else:
                    return value if self._custom is None else self._only_custom(value)
            return self.value(_DECODER.decode(raw))
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None

    def _only_custom(self, value: Any) -> Any:
        custom = self._custom
        if custom is None:
            return value
        if isinstance(value, str):
            return custom.apply(value)
        if isinstance(value, dict):
            return {key: self._only_custom(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._only_custom(item) for item in value]
        return value

    def value(self, value: Any) -> Any:
        """A JSON value (decoded) with every string redacted; objects' keys kept."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value


def _scoped(pattern: str) -> str:
    """`pattern` with its leading inline flags (`(?i)`) turned into a group of their own, so it can be combined."""
    match = re.match(r"\(\?([aiLmsux]+)\)", pattern)
    if match is None:
        return pattern
    return f"(?{match.group(1)}:{pattern[match.end() :]})"
