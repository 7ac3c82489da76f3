"""`keep_lock()`: a single-flight lock held as a lease, renewed while its flight runs and released when it lands.

The bound. A lock lives in the backend for `Lease.seconds` (the `lock_lease` setting) after the last command
that took or renewed it (counted from when Redis ran it). Its holder renews it every third of that while its
upstream call runs, for at most `Lease.longest` (`lock_ttl`), and releases it as soon as the flight lands;
when the backend does not answer the release, it tries again (after 50 ms, then twice as long each time, at
most every third of the lease) until the backend reports the lock released or expired. So a lock whose holder
has finished, died, frozen or lost Redis is gone within `lock_lease` seconds of its holder's last renewal, at
once when Redis answers the release; only a holder whose upstream call still runs keeps it longer, and never
past `lock_ttl` (plus one lease). A `SET` whose reply was lost counts as taken (the backend says so), so that
lock is renewed and released too, or expires within the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from proxy.cache.store import HeldLock, ResponseCache

__all__ = ["FIRST_RETRY", "RENEWALS", "SYSTEM_CLOCK", "Clock", "Lease", "keep_lock"]

RENEWALS = 3
"""Renewals per lease: two in a row may fail (a Redis blip, a killed connection) before the lock lapses."""
FIRST_RETRY = 0.05
"""Seconds before a failed release is tried again (the pool reconnects at once after a killed connection)."""


class Clock:
    """Time as the keeper sees it: the system's monotonic clock and asyncio's waits (the tests pass a fake)."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until `event` is set or `seconds` have passed; whether it is set."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()
        return event.is_set()


SYSTEM_CLOCK = Clock()


@dataclass(frozen=True, slots=True)
class Lease:
    """How a single-flight lock is held."""

    seconds: float
    """The lock's time to live in the backend, renewed while its flight runs (`lock_lease`)."""
    longest: float
    """The longest a flight keeps its lock (`lock_ttl`); its waiters wait no longer either."""

    @property
    def renew_every(self) -> float:
        """Seconds between renewals."""
        return self.seconds / RENEWALS


async def keep_lock(
    backend: ResponseCache, held: HeldLock, lease: Lease, landed: asyncio.Event, clock: Clock = SYSTEM_CLOCK
) -> None:
    """Keep `held`, just taken in `backend`, until `landed` is set (or `lease.longest` has passed), then release it."""
    stop = clock.now() + lease.longest
    while not await clock.wait(landed, max(0.0, min(lease.renew_every, stop - clock.now()))):
        if clock.now() >= stop:
            break  # as long as a flight may last: its waiters stop waiting now too
        if not await backend.renew(held, lease.seconds):
            return  # it expired or is another's: nothing of ours to release
    delay = FIRST_RETRY
    while not await backend.unlock(held):
        if clock.now() >= stop + lease.seconds:
            return  # the backend should have said it expired by now; never retry for ever
        await clock.sleep(delay)
        delay = min(2 * delay, lease.renew_every)
