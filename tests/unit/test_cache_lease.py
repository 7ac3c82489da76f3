"""`keep_lock()` on a fake clock: when a single-flight lock is renewed, released, retried and let go."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from proxy.cache.lease import FIRST_RETRY, Clock, Lease, keep_lock
from proxy.cache.store import HeldLock

LEASE = Lease(seconds=3.0, longest=30.0)


class FakeClock(Clock):
    """Virtual time: waits return at once, having moved the clock on (running what was due on the way)."""

    def __init__(self) -> None:
        self.time = 0.0
        self._due: list[tuple[float, Callable[[], None]]] = []

    def now(self) -> float:
        return self.time

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._due.append((when, action))

    def _advance(self, until: float, event: asyncio.Event | None = None) -> None:
        for when, action in sorted(self._due, key=lambda due: due[0]):
            if when > until:
                break
            self._due.remove((when, action))
            self.time = max(self.time, when)
            action()
            if event is not None and event.is_set():
                return
        self.time = until

    async def sleep(self, seconds: float) -> None:
        self._advance(self.time + seconds)
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if not event.is_set():
            self._advance(self.time + seconds, event)
        await asyncio.sleep(0)
        return event.is_set()


class FakeBackend:
    """Records when each lock command came; answers from scripts (renewals True, releases done, unless told)."""

    def __init__(self, clock: FakeClock, *, renewals: Sequence[bool] = (), releases: Sequence[bool] = ()) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self._renewals = iter(renewals)
        self._releases = iter(releases)

    async def renew(self, held: HeldLock, ttl: float) -> bool:
        assert (held.key, ttl) == ("lock:k", LEASE.seconds)
        self.calls.append(("renew", self.clock.now()))
        return next(self._renewals, True)

    async def unlock(self, held: HeldLock) -> bool:
        self.calls.append(("unlock", self.clock.now()))
        return next(self._releases, True)


async def keep(backend: FakeBackend, clock: FakeClock, landed: asyncio.Event, lease: Lease = LEASE) -> None:
    held = HeldLock(key="lock:k", token=b"t")
    await keep_lock(backend, held, lease, landed, clock)  # type: ignore[arg-type]  # the lock commands are enough


def times(backend: FakeBackend, what: str) -> list[float]:
    return [at for name, at in backend.calls if name == what]


async def test_a_lock_is_renewed_every_third_of_its_lease_while_the_flight_runs_then_released_when_it_lands() -> None:
    clock, landed = FakeClock(), asyncio.Event()
    backend = FakeBackend(clock)
    clock.at(3.5, landed.set)
    await keep(backend, clock, landed)
    assert backend.calls == [("renew", 1.0), ("renew", 2.0), ("renew", 3.0), ("unlock", 3.5)]


async def test_a_flight_that_lands_before_the_first_renewal_only_releases() -> None:
    clock, landed = FakeClock(), asyncio.Event()
    backend = FakeBackend(clock)
    clock.at(0.2, landed.set)
    await keep(backend, clock, landed)
    assert backend.calls == [("unlock", 0.2)]


async def test_a_flight_that_never_lands_gives_its_lock_up_after_the_longest_flight() -> None:
    clock, landed = FakeClock(), asyncio.Event()
    backend = FakeBackend(clock)
    await keep(backend, clock, landed, Lease(seconds=3.0, longest=5.0))
    assert backend.calls == [("renew", 1.0), ("renew", 2.0), ("renew", 3.0), ("renew", 4.0), ("unlock", 5.0)]


async def test_a_failed_release_is_tried_again_backing_off_until_the_backend_answers() -> None:
    clock, landed = FakeClock(), asyncio.Event()
    backend = FakeBackend(clock, releases=[False] * 6)
    clock.at(0.5, landed.set)
    await keep(backend, clock, landed)
    waits = [FIRST_RETRY, 0.1, 0.2, 0.4, 0.8, 1.0]  # doubling, at most a third of the lease
    expected = [0.5 + sum(waits[:i]) for i in range(len(waits) + 1)]
    assert times(backend, "unlock") == pytest.approx(expected)
    assert times(backend, "renew") == []


async def test_a_release_the_backend_never_confirms_stops_once_the_lock_has_surely_expired() -> None:
    clock, landed = FakeClock(), asyncio.Event()
    backend = FakeBackend(clock, releases=[False] * 1000)
    clock.at(0.5, landed.set)
    await keep(backend, clock, landed, Lease(seconds=3.0, longest=10.0))
    unlocks = times(backend, "unlock")
    assert unlocks[-1] >= 10.0 + 3.0
    assert len(unlocks) < 20


async def test_a_lock_found_to_be_another_s_is_neither_renewed_nor_released_any_more() -> None:
    clock, landed = FakeClock(), asyncio.Event()
    backend = FakeBackend(clock, renewals=[True, False])
    clock.at(10.0, landed.set)
    await keep(backend, clock, landed)
    assert backend.calls == [("renew", 1.0), ("renew", 2.0)]


async def test_the_system_clock_wait_returns_when_the_event_is_set_or_the_time_is_up() -> None:
    clock, event = Clock(), asyncio.Event()
    assert await clock.wait(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await clock.wait(event, 30.0) is True
