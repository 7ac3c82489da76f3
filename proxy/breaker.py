"""`CircuitBreaker`: stops sending to a failing route, and probes it again after a cooldown."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "CircuitState"]

CircuitState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed until `failures` failures in a row; then open for `cooldown` seconds; then half-open.

    Half-open lets one probe through at a time: its success closes the circuit, its failure opens it
    for another cooldown. The clock is injected, so tests need no sleeping. State is per process.
    """

    __slots__ = ("_clock", "_cooldown", "_failures", "_opened_at", "_probing", "_threshold")

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
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
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """The route failed (429, 5xx, timeout, connection): count it; open the circuit at the threshold."""
        self._failures += 1
        if self._probing or self._failures >= self._threshold:
            self._opened_at = self._clock()
        self._probing = False
