"""`CacheRule`: what a rule says about caching its answers, and `read_cache_rule()` that checks it.

A rule's `cache:` is a mode (`on`, `off`, `read`, `write`) or a mapping:
`{mode, ttl, deterministic_only, semantic: {threshold}}`. Rules without one take `CacheRule()`:
read and write, the cache block's TTL, deterministic requests only, exact match only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CACHE_KEYS",
    "DEFAULT_CACHE_RULE",
    "DEFAULT_SEMANTIC_THRESHOLD",
    "CacheRule",
    "CacheRuleError",
    "read_cache_rule",
]

CACHE_KEYS = ("mode", "ttl", "deterministic_only", "semantic")
DEFAULT_SEMANTIC_THRESHOLD = 0.95
"""Cosine similarity a semantic hit needs when a rule turns `semantic` on without a threshold."""
_MODES = {"on": (True, True), "off": (False, False), "read": (True, False), "write": (False, True)}


class CacheRuleError(Exception):
    """A rule's `cache:` is invalid; `path` is where, below `cache`."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


@dataclass(frozen=True, slots=True)
class CacheRule:
    """How one rule's requests use the response cache."""

    read: bool = True
    """Answer from the cache when it holds the answer."""
    write: bool = True
    """Store fresh, complete answers."""
    ttl: float | None = None
    """Seconds an answer stays; None: the cache block's `ttl`."""
    deterministic_only: bool = True
    """Only requests that ask for one answer: `temperature: 0` or a fixed `seed`."""
    semantic_threshold: float | None = None
    """Also answer a request whose meaning is this close (cosine) to a cached one; None: exact match only."""

    @property
    def enabled(self) -> bool:
        """Whether the cache is used at all."""
        return self.read or self.write


DEFAULT_CACHE_RULE = CacheRule()
"""A rule without `cache:`: read and write, deterministic requests only, exact match."""


def _mode(value: object) -> tuple[bool, bool]:
    # YAML 1.1 reads a bare `on` / `off` as a boolean.
    if value is True:
        return _MODES["on"]
    if value is False:
        return _MODES["off"]
    if isinstance(value, str) and value in _MODES:
        return _MODES[value]
    raise CacheRuleError(f"cache mode must be one of: {', '.join(_MODES)}; got {value!r}", ("mode",))


def _threshold(value: object) -> float | None:
    if value is False or value is None:
        return None
    if value is True:
        return DEFAULT_SEMANTIC_THRESHOLD
    if isinstance(value, Mapping):
        for key in value:
            if key != "threshold":
                raise CacheRuleError(f"unknown key '{key}' in semantic; it has: threshold", ("semantic", str(key)))
        value = value.get("threshold", DEFAULT_SEMANTIC_THRESHOLD)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)
        raise CacheRuleError(f"threshold must be a number with 0 < threshold <= 1, got {value!r}", ("semantic",))
    raise CacheRuleError(f"semantic must be true, false or {{threshold: 0.95}}, got {value!r}", ("semantic",))


def read_cache_rule(raw: Any) -> CacheRule:
    """Check a rule's `cache:` value and build its `CacheRule`.

    Raises:
        CacheRuleError: an unknown key or mode, a TTL that is not a positive number, a bad threshold.
    """
    if not isinstance(raw, Mapping):
        read, write = _mode(raw)
        return CacheRule(read=read, write=write)
    for key in raw:
        if key not in CACHE_KEYS:
            raise CacheRuleError(f"unknown key '{key}' in cache; it has: {', '.join(CACHE_KEYS)}", (str(key),))
    read, write = _mode(raw.get("mode", "on"))
    ttl = raw.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise CacheRuleError(f"ttl must be a number of seconds > 0, got {ttl!r}", ("ttl",))
    deterministic_only = raw.get("deterministic_only", True)
    if not isinstance(deterministic_only, bool):
        raise CacheRuleError(
            f"deterministic_only must be true or false, got {deterministic_only!r}", ("deterministic_only",)
        )
    return CacheRule(
        read=read,
        write=write,
        ttl=float(ttl) if ttl is not None else None,
        deterministic_only=deterministic_only,
        semantic_threshold=_threshold(raw.get("semantic")),
    )
