"""`CircuitBreaker`: stops sending to a failing route, and probes it again after a cooldown."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "CircuitState"]

CircuitState = Literal["closed", "open", "half_open"]

logger = logging.getLogger("turnout.breaker")


class CircuitBreaker:
    """Closed until `failures` failed requests in a row; then open for `cooldown` seconds; then half-open.

    Half-open lets one probe through at a time: its success closes the circuit, its failure opens it
    for another cooldown. The clock is injected, so tests need no sleeping. State is per process.
    Opening and closing are logged (once each, with the route's `name`), never each request it turns away.
    """

    __slots__ = ("_clock", "_cooldown", "_failures", "_name", "_opened_at", "_probing", "_threshold")

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic, *, name: str = ""
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._name = name
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        """`closed`, `open`, or `half_open` once the cooldown is over."""
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self._cooldown else "open"

    def allow(self) -> bool:
        """Whether a request may go to the route now (in half-open: only the one probe)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        """The route answered: close the circuit."""
        if self._opened_at is not None:
            logger.warning("circuit of route %s closed: it answered again", self._name)
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """A request failed on the route (5xx, timeout, connection; 429 when counted): count it once.

        Opens the circuit at the threshold, or again when the half-open probe failed.
        """
        self._failures += 1
        if self._probing or self._failures >= self._threshold:
            if self._opened_at is None or self._probing:
                logger.warning(
                    "circuit of route %s opened after %d failed requests in a row; its fallbacks answer for %gs",
                    self._name,
                    self._failures,
                    self._cooldown,
                )
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """A request let through ended neither answered nor counted: its half-open probe, if any, is free again.

        The caller's own error, a 429 that does not count, no time left for the route.
        """
        self._probing = False
