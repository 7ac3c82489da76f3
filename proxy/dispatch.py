"""`Dispatcher`: runs one call on its decided route, with retries and backoff, then on each fallback, by a deadline.

The breakers live here, one per route; the deadline's math is `proxy.deadline`. `Pipeline` decides and looks
in the cache; what an attempt is (`once`: answer, or open a stream) it passes in, so the loop is the same for
every endpoint kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from policies import Decision
from proxy.accounting.tally import CacheStatus, Tally
from proxy.breaker import CircuitBreaker
from proxy.config.sections import BreakerSettings, RetrySettings
from proxy.deadline import Deadline
from proxy.endpoints.base import Codec
from proxy.outcome import Outcome, OutcomeError
from proxy.wire.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    ProxyError,
    RouteUnavailableError,
    UpstreamTimeoutError,
)
from routes import Call, Route

__all__ = ["Dispatcher"]

logger = logging.getLogger("turnout.pipeline")

T = TypeVar("T")


class Dispatcher:
    """Tries the decided route, then its fallbacks, each with retries, each behind its circuit breaker."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        retry: RetrySettings,
        breaker: BreakerSettings,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes = routes
        self.breakers = {name: CircuitBreaker(breaker.failures, breaker.cooldown, clock, name=name) for name in routes}
        self._breaker = breaker
        self._retry = retry
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep

    async def run(
        self,
        codec: Codec[Any],
        call: Call[Any],
        decision: Decision,
        once: Callable[[Route], Awaitable[T]],
        tally: Tally,
        cache: CacheStatus,
        deadline: Deadline,
    ) -> tuple[str, T, tuple[str, ...]]:
        """Run `once` on the decided route, then on each fallback while the failure is the route's, by `deadline`.

        Only the routes that serve the call's endpoint kind are tried; each attempt is cut to its share of what
        is left of the deadline (`Deadline.for_attempt`).

        Raises:
            OutcomeError: the last error (`DeadlineExceededError` once the deadline passed), with the outcome
                that shows the decision (which route failed, sent by which rule, what the cache did).
        """
        failed: list[str] = []
        kind = codec.kind
        candidates = [name for name in (decision.route, *decision.fallbacks) if kind in self._routes[name].endpoints]
        if not candidates:
            message = f"The route '{decision.route}' (rule '{decision.rule}') does not answer {kind} requests."
            error = InvalidRequestError(message, param="model", code="unsupported_endpoint")
            raise OutcomeError(error, Outcome(decision.route, decision.rule, cache=cache))
        for index, name in enumerate(candidates):
            last = index == len(candidates) - 1
            tally.route, tally.fallback_from = name, tuple(failed)
            try:
                result = await self._on_route(name, once, tally, (index, len(candidates)), deadline, codec, call)
                return name, result, tuple(failed)
            except ProxyError as exc:
                if exc.route_failure and deadline.expired():
                    message = f"No route answered within the request's deadline of {deadline.seconds:g} s."
                    late = DeadlineExceededError(message)
                    raise OutcomeError(late, Outcome(name, decision.rule, tuple(failed), cache)) from exc
                if not exc.route_failure or last:
                    raise OutcomeError(exc, Outcome(name, decision.rule, tuple(failed), cache)) from exc
                if not isinstance(exc, RouteUnavailableError):  # an open circuit logs when it opens, not each time
                    logger.warning("route %s failed (%s %s); falling back", name, exc.status, exc.message)
                failed.append(name)
        raise AssertionError("unreachable: the last route's error is raised")  # pragma: no cover

    async def _on_route(
        self,
        name: str,
        once: Callable[[Route], Awaitable[T]],
        tally: Tally,
        position: tuple[int, int],
        deadline: Deadline,
        codec: Codec[Any],
        call: Call[Any],
    ) -> T:
        """Run `once` on route `name` (at `position` of the candidates), retrying with backoff while there is time.

        Before the last candidate an open circuit sends the request on to the fallbacks at once. The last
        candidate is always tried, open or not (as Envoy's panic mode does): failing fast there would
        turn a degraded upstream into a full outage. Its outcomes still move the breaker, once per request
        however many attempts it took; a 429 only with `count_rate_limits`. An error is first read as the codec
        reads it for this call (`Codec.upstream_error`): one that is the caller's moves nothing.
        """
        breaker = self.breakers[name]
        index, candidates = position
        if index < candidates - 1 and not breaker.allow():
            error = RouteUnavailableError(f"The route '{name}' is failing; its fallbacks answer until it recovers.")
            tally.failed_attempt(name, error, retried=False)
            raise error
        counted = settled = False
        try:
            for attempt in itertools.count():
                budget = deadline.for_attempt(index, candidates)
                if budget <= 0:
                    raise UpstreamTimeoutError(f"No time was left for the route '{name}' within the deadline.")
                try:
                    result = await self._attempt(name, once, tally, budget)
                except ProxyError as exc:
                    callers = codec.upstream_error(call.body, exc)
                    if callers is not exc:
                        raise callers from exc
                    if not exc.route_failure:
                        raise
                    counted = counted or self._breaker.count_rate_limits or exc.kind != "rate_limit"
                    wait = self._backoff(attempt, exc)
                    retry = attempt < self._retry.attempts and exc.retryable
                    retry = retry and wait < deadline.for_attempt(index, candidates)
                    tally.failed_attempt(name, exc, retried=retry)
                    if not retry:
                        if counted:
                            breaker.record_failure()
                            settled = True
                            tally.circuit(name, breaker.state)
                        raise
                    await self._sleep(wait)
                else:
                    if breaker.state != "closed":
                        tally.circuit(name, "closed")
                    breaker.record_success()
                    settled = True
                    return result
        finally:
            if not settled:
                breaker.release()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, name: str, once: Callable[[Route], Awaitable[T]], tally: Tally, budget: float) -> T:
        """One try of `once` on route `name`, given at most `budget` seconds (then an `UpstreamTimeoutError`).

        The one place an upstream attempt runs: a span per attempt wraps this call.
        """
        started = time.perf_counter()
        limit = asyncio.timeout(budget)
        try:
            async with limit:
                result = await once(self._routes[name])
        except TimeoutError as exc:
            if not limit.expired():
                raise
            message = f"The route '{name}' did not answer within its share of the deadline ({budget:.3g} s)."
            raise UpstreamTimeoutError(message) from exc
        finally:
            tally.upstream_seconds += time.perf_counter() - started
        tally.answered_at = time.perf_counter()
        return result

    def _backoff(self, attempt: int, error: ProxyError) -> float:
        """Seconds before the next try: the upstream's `retry-after`, or full-jitter exponential backoff."""
        cap = self._retry.max_backoff
        with contextlib.suppress(KeyError, ValueError):
            return min(float(error.headers["retry-after"]), cap)
        return self._rng.uniform(0, min(cap, self._retry.backoff * 2**attempt))
