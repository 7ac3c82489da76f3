"""`Decision`: where a request goes, which rule sent it there, why, and what the rule says about it.

A value the engine builds once per rule (and split target) when the policy loads; the proxy reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from policies.cacherule import DEFAULT_CACHE_RULE, CacheRule

__all__ = ["LOG_LEVELS", "Decision", "LogLevel"]

LogLevel = Literal["content", "metadata"]
"""What the traffic log keeps of a request: its content too (redacted), or its metadata only."""
LOG_LEVELS: tuple[LogLevel, ...] = ("content", "metadata")


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes, which rule sent it there, and why."""

    route: str
    """The route to try first."""
    rule: str
    """The name of the rule that matched."""
    reason: str
    """The rule's conditions as they read (and, for a split, which share was picked and by what)."""
    fallbacks: tuple[str, ...] = ()
    """Routes to try in order when `route` fails."""
    shadow: str | None = None
    """The route that also gets a copy of this request (its answer discarded), when it was sampled."""
    cache: CacheRule = DEFAULT_CACHE_RULE
    """How this request uses the response cache (the rule's `cache:`)."""
    deadline: float | None = None
    """Seconds the whole request may take, retries and fallbacks included (the rule's `deadline:`; None: the
    policy file's default)."""
    log: LogLevel | None = None
    """What the traffic log keeps of the request: `content` (the request and its answer, redacted) or `metadata`
    (the rule's `log:`; None: the `traffic` block's `log`)."""
