"""`ManualClock`: virtual time for code that takes a `proxy.cache.lease.Clock`, moved on only by the test.

Every `sleep()` and `wait()` waits for the clock to reach its time; `advance()` moves the clock there in order,
waking each sleeper at its time and letting what it wakes run until it waits again. Nothing waits in real
time, so a test of a 30-second wait takes no time and cannot race the machine's load.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from proxy.cache.lease import Clock

SETTLE = 20
"""Event-loop turns given to the woken after each step: far more than any chain of awaits these tests start."""


async def settle() -> None:
    """Let every task that can run, run until it waits (on the clock or on something else)."""
    for _ in range(SETTLE):
        await asyncio.sleep(0)


class ManualClock(Clock):
    """Virtual time that moves only when the test says so."""

    def __init__(self) -> None:
        self.time = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.time + seconds, next(self._order), wake))
        await wake

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.sleep(seconds))}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return event.is_set()

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, waking each sleeper at its time, in order."""
        until = self.time + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= until:
            when, _, wake = heapq.heappop(self._sleepers)
            if wake.done():  # its waiter was cancelled (a `wait()` whose event came first)
                continue
            self.time = max(self.time, when)
            wake.set_result(None)
            await settle()
        self.time = until
        await settle()
