"""`Redaction`: what the traffic log removes from the content it keeps, before it keeps it.

Turnout's own secrets go first, by value (`proxy.wire.redaction.Redactor`); then every pattern, in one pass of
one regular expression over each string of the request and the answer (keys of objects are left as they are).
The defaults: e-mail addresses, phone numbers, card numbers (those that pass the Luhn check) and API keys
(`sk-...`, `tk-...`, bearer tokens); each becomes a placeholder that says what it was (`[email]`, `[phone]`,
`[card]`, `[key]`); a configured pattern's match becomes `[redacted]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from proxy.config.sections import RedactSettings
from proxy.wire.redaction import Redactor

__all__ = ["DEFAULT_PATTERNS", "Redaction"]

DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("key", r"(?i)\b(?:sk|tk)-[A-Za-z0-9_\-]{16,}|\bbearer\s+[A-Za-z0-9._\-~+/]{8,}=*"),
    ("email", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
    ("card", r"(?<![\d-])\d(?:[ \-]?\d){12,18}(?![\d-])"),
    (
        "phone",
        r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}[ .\-]\d{3,4}(?:[ .\-]?\d{2,4})?(?!\w)"
        r"|(?<![\w+])\+\d{8,14}(?!\w)",
    ),
)
"""(name, pattern): what `defaults: true` removes; the name is the placeholder's (`[email]`)."""
_CUSTOM = "[redacted]"


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


class Redaction:
    """Removes Turnout's secrets and the configured patterns from every string of a JSON value."""

    def __init__(self, settings: RedactSettings, secrets: Redactor | None = None) -> None:
        named = [*(DEFAULT_PATTERNS if settings.defaults else ()), *(("", p) for p in settings.patterns)]
        self._placeholders = {f"t{index}": name for index, (name, _) in enumerate(named)}
        combined = "|".join(f"(?P<t{index}>{_scoped(pattern)})" for index, (_, pattern) in enumerate(named))
        self._pattern = re.compile(combined) if named else None
        self._secrets = secrets if secrets else None

    def _replace(self, match: re.Match[str]) -> str:
        name = self._placeholders[match.lastgroup or ""]
        if name == "card" and not _luhn(re.sub(r"[ \-]", "", match.group(0))):
            return match.group(0)
        return f"[{name}]" if name else _CUSTOM

    def text(self, text: str) -> str:
        """`text` without the secrets and the patterns' matches."""
        if self._secrets is not None:
            text = self._secrets.values(text)
        return text if self._pattern is None else self._pattern.sub(self._replace, text)

    def value(self, value: Any) -> Any:
        """A JSON value (decoded) with every string redacted; objects' keys kept."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    @property
    def placeholders(self) -> Iterable[str]:
        """The placeholders it writes."""
        return sorted({f"[{name}]" if name else _CUSTOM for name in self._placeholders.values()})


def _scoped(pattern: str) -> str:
    """`pattern` with its leading inline flags (`(?i)`) turned into a group of their own, so it can be combined."""
    match = re.match(r"\(\?([aiLmsux]+)\)", pattern)
    if match is None:
        return pattern
    return f"(?{match.group(1)}:{pattern[match.end() :]})"
