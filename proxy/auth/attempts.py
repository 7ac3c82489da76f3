"""Who presented which key, and which client addresses keep presenting wrong ones (`proxy.access` uses both)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

__all__ = ["FailedAttempts", "presented_key"]

_BEARER = b"bearer "
_WINDOW = 60.0
_MAX_ADDRESSES = 100_000
"""Addresses whose failures are remembered at once (a dict entry each)."""


class FailedAttempts:
    """Failed key checks per client address in the current minute (per process: enough to slow a guesser down)."""

    __slots__ = ("_by_address", "_clock", "_limit")

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit, self._clock = limit, clock
        self._by_address: dict[str, tuple[float, int]] = {}

    def blocked(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None when it may now."""
        entry = self._by_address.get(address)
        if entry is None:
            return None
        started, count = entry
        left = started + _WINDOW - self._clock()
        if left <= 0:
            del self._by_address[address]
            return None
        return left if count >= self._limit else None

    def failed(self, address: str) -> None:
        """One more failed check from `address` (its minute starts at its first failure)."""
        now = self._clock()
        started, count = self._by_address.get(address, (now, 0))
        if now - started >= _WINDOW:
            started, count = now, 0
        self._by_address[address] = (started, count + 1)
        if len(self._by_address) > _MAX_ADDRESSES:  # many addresses at once: forget the one seen first
            del self._by_address[next(iter(self._by_address))]


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The key of `Authorization: Bearer KEY` (else of `api-key`), b"" when there is none."""
    api_key = b""
    for name, value in headers:
        if name == b"authorization":
            if value[:7].lower() == _BEARER:
                return value[7:].strip()
        elif name == b"api-key":
            api_key = value.strip()
    return api_key
