"""`Deadline`: one time limit for a whole request, across its attempts, retries and fallbacks.

Where it comes from, first found wins: the client's `x-turnout-timeout` header (seconds, clamped to the policy
file's `deadline.max`), the matched rule's `deadline`, the file's `deadline.default`. A header that is no
positive, finite number of seconds is the caller's mistake: a 400. Each attempt gets what is left of the
deadline less a share (`deadline.fallback_share`) held back for the fallbacks still to come, so a hung first
route cannot use up the time its fallback needs. Pure: the clock is passed in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.config.sections import DeadlineSettings
from proxy.wire.errors import InvalidRequestError

__all__ = ["DEADLINE_HEADER", "TIMER_SLACK", "Deadline", "client_deadline", "deadline_seconds"]

DEADLINE_HEADER = b"x-turnout-timeout"
"""The client's own deadline for its request, in seconds (a decimal number); never sent upstream."""

TIMER_SLACK = 0.002
"""Seconds by which an event-loop timer may fire before its time (uvloop truncates delays to milliseconds)."""


def client_deadline(raw: str | None) -> float | None:
    """The seconds the client's `x-turnout-timeout` (`raw`, as sent) asks for, unclamped; None without one.

    Raises:
        InvalidRequestError: the header is not a positive, finite number of seconds.
    """
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        message = "The x-turnout-timeout header must be a positive number of seconds, such as 30 or 2.5."
        raise InvalidRequestError(message, param="x-turnout-timeout", code="invalid_timeout")
    return seconds


def deadline_seconds(settings: DeadlineSettings, rule: float | None, client: float | None) -> float:
    """The request's deadline in seconds: the client's (at most `settings.max`), else the rule's, else the default."""
    if client is not None:
        return min(client, settings.max)
    return rule if rule is not None else settings.default


@dataclass(slots=True)
class Deadline:
    """`seconds` from `started` (on `clock`), of which `fallback_share` is held back for fallbacks."""

    seconds: float
    started: float
    fallback_share: float = 0.0
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)

    def left(self) -> float:
        """Seconds left before the deadline (negative once it passed)."""
        return self.started + self.seconds - self.clock()

    def expired(self) -> bool:
        """Whether the deadline has passed, to within the event loop's timer resolution (`TIMER_SLACK`).

        An attempt cut to what is left ends on an event-loop timer, and uvloop's timers count whole milliseconds
        (a delay is truncated to them): read on `perf_counter`, such an attempt can end a fraction of a
        millisecond before the deadline, which is the deadline's timeout all the same.
        """
        return self.left() <= TIMER_SLACK

    def for_attempt(self, position: int, candidates: int) -> float:
        """Seconds an attempt on the route at `position` of `candidates` (the route, then its fallbacks) may take.

        What is left, less the share held back for the routes after it: the whole share before the first
        fallback, then a smaller part of it before each later one (in proportion to the routes still to come),
        nothing on the last route. At most zero: no time for this route.
        """
        after = candidates - 1 - position
        held = self.seconds * self.fallback_share * after / (candidates - 1) if after > 0 else 0.0
        return self.left() - held
