from __future__ import annotations

from proxy.breaker import CircuitBreaker


def state(breaker: CircuitBreaker) -> str:
    return breaker.state  # a call, so that mypy does not narrow the property between assertions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_failures_in_a_row_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert state(breaker) == "closed"
    breaker.record_failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert state(breaker) == "half_open"
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # no second request while it is out
    breaker.record_success()
    assert state(breaker) == "closed"
    assert breaker.allow()


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    clock.now += 9
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, cooldown=10, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state(breaker) == "closed"
