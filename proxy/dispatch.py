"""`Dispatcher`: runs one call on its decided route, with retries and backoff, then on each fallback.

The breakers live here, one per route. `Pipeline` decides and looks in the cache; what an attempt is
(`once`: answer, or open a stream) it passes in, so the loop is the same for every endpoint kind.
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
from proxy.endpoints.base import Codec
from proxy.outcome import Outcome, OutcomeError
from proxy.wire.errors import InvalidRequestError, ProxyError, RouteUnavailableError
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
        self.breakers = {name: CircuitBreaker(breaker.failures, breaker.cooldown, clock) for name in routes}
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
    ) -> tuple[str, T, tuple[str, ...]]:
        """Run `once` on the decided route, then on each fallback while the failure is the route's.

        Only the routes that serve the call's endpoint kind are tried.

        Raises:
            OutcomeError: the last error, with the outcome that shows the decision (which route failed, sent by
                which rule, what the cache did).
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
                result = await self._on_route(name, once, tally, skip_when_open=not last, codec=codec, call=call)
                return name, result, tuple(failed)
            except ProxyError as exc:
                if not exc.route_failure or last:
                    raise OutcomeError(exc, Outcome(name, decision.rule, tuple(failed), cache)) from exc
                logger.warning("route %s failed (%s %s); falling back", name, exc.status, exc.message)
                failed.append(name)
        raise AssertionError("unreachable: the last route's error is raised")  # pragma: no cover

    async def _on_route(
        self,
        name: str,
        once: Callable[[Route], Awaitable[T]],
        tally: Tally,
        *,
        skip_when_open: bool,
        codec: Codec[Any],
        call: Call[Any],
    ) -> T:
        """Run `once` on route `name`, retrying with backoff.

        With `skip_when_open`, an open circuit sends the request on to the fallbacks at once. The last
        candidate is always tried, open or not (as Envoy's panic mode does): failing fast there would
        turn a degraded upstream into a full outage. Its outcomes still move the breaker. An error is first
        read as the codec reads it for this call (`Codec.upstream_error`): one that is the caller's moves nothing.
        """
        breaker = self.breakers[name]
        for attempt in itertools.count():
            if skip_when_open and not breaker.allow():
                error = RouteUnavailableError(f"The route '{name}' is failing; its fallbacks answer until it recovers.")
                tally.failed_attempt(name, error, retried=False)
                raise error
            started = time.perf_counter()
            try:
                result = await once(self._routes[name])
            except ProxyError as exc:
                tally.upstream_seconds += time.perf_counter() - started
                callers = codec.upstream_error(call.body, exc)
                if callers is not exc:
                    raise callers from exc
                if not exc.route_failure:
                    raise
                breaker.record_failure()
                tally.circuit(name, breaker.state)
                retry = attempt < self._retry.attempts and exc.retryable
                tally.failed_attempt(name, exc, retried=retry)
                if not retry:
                    raise
                await self._sleep(self._backoff(attempt, exc))
            else:
                tally.answered_at = now = time.perf_counter()
                tally.upstream_seconds += now - started
                if breaker.state != "closed":
                    tally.circuit(name, "closed")
                breaker.record_success()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int, error: ProxyError) -> float:
        """Seconds before the next try: the upstream's `retry-after`, or full-jitter exponential backoff."""
        cap = self._retry.max_backoff
        with contextlib.suppress(KeyError, ValueError):
            return min(float(error.headers["retry-after"]), cap)
        return self._rng.uniform(0, min(cap, self._retry.backoff * 2**attempt))
