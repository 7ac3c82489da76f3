"""Redaction: the secrets Turnout holds, removed by value (and in their encoded forms), and key-like patterns.

Patterns (`redact`) catch the keys Turnout cannot know: an OpenAI key a caller pasted into a message,
a bearer token in an exception. They cannot catch a key of another format, so a `Redactor` also
removes, by value, every secret Turnout itself holds (upstream keys, the Redis password, ...): it is
built from the loaded settings (`Settings.secrets()`) and handed to what passes on text that comes
from an upstream or a server (the upstream client, the log formatter, the Redis cache).

This module imports nothing from the project, so routes may use it too.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MIN_SECRET_LENGTH", "PLACEHOLDER", "Redactor", "redact"]

PLACEHOLDER = "[redacted]"
_PLACEHOLDER_BYTES = PLACEHOLDER.encode()

MIN_SECRET_LENGTH = 8
"""Shorter values are not removed by value: no one can keep them secret (they are guessed in a moment),
and removing a word such as `ollama` from every answer and log line would mangle ordinary text."""

# OpenAI keys (sk-..., sk-proj-...), Turnout's own (tk-...), bearer tokens and other long key-like strings a message
# might echo.
_SECRET = re.compile(r"(?i)\b([st]k-[a-z0-9_\-*]{6,}|bearer\s+(?=\S*\d)[a-z0-9._\-~+/=*]{8,}|key[-_][a-z0-9_\-*]{16,})")

_SECRET_HINTS = ("sk-", "tk-", "bearer", "key")
"""Every match of `_SECRET` contains one of these (case aside): text without any needs no regex search."""


def redact(text: str) -> str:
    """Replace anything that looks like an API key in `text` with a fixed placeholder."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _SECRET_HINTS):  # a log line's usual case, ten times faster
        return text
    return _SECRET.sub(PLACEHOLDER, text)


def _lower_escapes(encoded: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda match: match.group(0).lower(), encoded)


def _forms(secret: str) -> set[str]:
    """The ways `secret` is written in text: as it is, percent-encoded (as in a URL or a form), JSON-escaped."""
    percent = urllib.parse.quote(secret, safe="")
    in_json = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {
        secret,
        percent,
        _lower_escapes(percent),
        urllib.parse.quote_plus(secret, safe=""),
        urllib.parse.quote(secret),  # `/` kept, as in a path
        *in_json,
        *(escaped.replace("/", "\\/") for escaped in in_json),  # JSON may escape `/`
        repr(secret)[1:-1],  # as a `repr` in a log line or traceback shows it
        ascii(secret)[1:-1],
    }


_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]{4,}")
"""Characters that every form of `_forms` writes as they are: a run of them is in every form of its secret."""


@dataclass(frozen=True, slots=True)
class _Secret:
    """One secret's forms, longest first, and a part that all of them hold (to skip text without any at once)."""

    anchor: str
    forms: tuple[str, ...]
    anchor_bytes: bytes
    forms_bytes: tuple[bytes, ...]

    @classmethod
    def of(cls, secret: str) -> _Secret:
        forms = tuple(sorted(_forms(secret), key=lambda form: (-len(form), form)))
        anchor = max(_UNRESERVED.findall(secret), key=len, default="")  # "" is in any text: every form is tried
        return cls(anchor, forms, anchor.encode(), tuple(form.encode() for form in forms))


class Redactor:
    """Removes known secret values (in every form `_forms` lists) and key-like patterns from text.

    Immutable and cheap to call: text without any secret costs one substring search per secret (for
    the longest run of characters no form escapes), plus the pattern check.
    """

    __slots__ = ("_by_length", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Remove each of `secrets` (those shorter than `MIN_SECRET_LENGTH` are left: see there)."""
        kept = frozenset(secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH)
        self._secrets = kept
        # Longest first: a secret that holds another is replaced whole, before the other could cut it.
        self._by_length = tuple(_Secret.of(secret) for secret in sorted(kept, key=lambda s: (-len(s), s)))

    def __reduce__(self) -> tuple[type[Redactor], tuple[tuple[str, ...]]]:
        # Pickled into each `turnout serve --workers N` worker with the log config.
        return Redactor, (tuple(sorted(self._secrets)),)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"

    def __or__(self, other: Redactor) -> Redactor:
        """A redactor that removes the secrets of both."""
        return Redactor(self._secrets | other._secrets)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Redactor) and other._secrets == self._secrets

    def __hash__(self) -> int:
        return hash(self._secrets)

    def __bool__(self) -> bool:
        """Whether it knows any secret value (patterns apply either way)."""
        return bool(self._secrets)

    def values(self, text: str) -> str:
        """`text` without the known secret values (patterns not applied: for an answer's content, say)."""
        for secret in self._by_length:
            if secret.anchor in text:
                for form in secret.forms:
                    if form in text:
                        text = text.replace(form, PLACEHOLDER)
        return text

    def text(self, text: str) -> str:
        """`text` without the known secret values, nor anything that looks like a key."""
        return redact(self.values(text))

    def optional(self, text: str | None) -> str | None:
        """`text()`, passing None through (for an error's nullable `param` and `code`)."""
        return None if text is None else self.text(text)

    def data(self, data: bytes) -> bytes:
        """`data` (a body, SSE events) without the known secret values, in any of their forms."""
        for secret in self._by_length:
            if secret.anchor_bytes in data:
                for form in secret.forms_bytes:
                    if form in data:
                        data = data.replace(form, _PLACEHOLDER_BYTES)
        return data
