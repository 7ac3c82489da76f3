"""`ChatPipeline`: the explicit path of a chat request: decide → cache → dispatch (retries, fallbacks) → account.

No framework types: the handlers give it a `ChatCall` and write out what it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from policies import Decision, PolicyEngine, extract_features
from proxy.breaker import CircuitBreaker
from proxy.caching import AnswerCache, CacheStatus, Ticket
from proxy.errors import ProxyError, RouteUnavailableError, UpstreamError, UpstreamRejectedError
from proxy.policyfile import BreakerSettings, RetrySettings
from proxy.replay import COMPLETION, entry, to_completion, to_stream
from proxy.schemas import Usage
from proxy.streaming import Relay, open_relay, replay_relay
from proxy.tasks import BackgroundTasks
from routes import ChatCall, Completion, Route

__all__ = ["CALLER_HEADER", "ChatPipeline", "Outcome", "decide"]

logger = logging.getLogger("turnout.pipeline")

CALLER_HEADER = "x-turnout-caller"
"""Who is calling, for `caller` conditions and sticky splits (API keys with names come later)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request was answered: the route that answered, the rule that sent it, the routes that failed."""

    route: str
    rule: str
    fallback_from: tuple[str, ...] = ()
    cache: CacheStatus = "bypass"

    def header_items(self) -> list[tuple[str, str]]:
        """The `x-turnout-*` response headers that show the decision."""
        items = [("x-turnout-route", self.route), ("x-turnout-rule", self.rule), ("x-turnout-cache", self.cache)]
        if self.fallback_from:
            items.append(("x-turnout-fallback-from", ",".join(self.fallback_from)))
        return items

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`header_items()` as raw ASGI headers."""
        return [(name.encode(), value.encode("latin-1")) for name, value in self.header_items()]


def _is_route_failure(error: ProxyError) -> bool:
    """429, 5xx, timeouts, connection failures: the route's trouble, not a 400 the caller caused."""
    return isinstance(error, UpstreamError) and not isinstance(error, UpstreamRejectedError)


def _retryable(error: ProxyError) -> bool:
    """Worth another try on the same route (a wrong key or model on it is not: fall back instead)."""
    return _is_route_failure(error) and error.upstream_status not in (401, 403, 404)


def decide(call: ChatCall, *, policy: PolicyEngine | None, named: Mapping[str, str], default_route: str) -> Decision:
    """Where `call` goes: the route its `model` names (route or alias), else the policy's first matching rule.

    Without a policy every call takes `default_route`, the one upstream, with the caller's own model.
    `turnout test` and `turnout explain` decide through this same function.
    """
    target = named.get(call.request.model)
    if target is not None:
        reason = f"the client asked for '{call.request.model}'"
        return Decision(route=target, rule="model", reason=reason, fallbacks=(), shadow=None)
    if policy is None:
        reason = "no rules: the one upstream, with the caller's model"
        return Decision(route=default_route, rule="default", reason=reason, fallbacks=(), shadow=None)
    return policy.decide(extract_features(call.request, call.headers, call.caller))


def _unfinished(ticket: Ticket, error: BaseException) -> None:
    """No answer to store; an error response says what the cache did too."""
    ticket.finish(None)
    if isinstance(error, ProxyError):
        error.headers = {**error.headers, "x-turnout-cache": ticket.status}


class ChatPipeline:
    """Decides where each chat call goes and gets it answered there, or on its fallbacks."""

    def __init__(
        self,
        *,
        routes: Mapping[str, Route],
        policy: PolicyEngine | None,
        retry: RetrySettings,
        breaker: BreakerSettings,
        tasks: BackgroundTasks,
        named: Mapping[str, str] | None = None,
        cache: AnswerCache | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = routes
        self.policy = policy
        self.named: Mapping[str, str] = named or {}
        """Model names that select a route directly (route names and aliases), when the policy allows it."""
        self.cache = cache
        """The response cache; None: every request bypasses it."""
        self.breakers = {name: CircuitBreaker(breaker.failures, breaker.cooldown, clock) for name in routes}
        self._retry = retry
        self._tasks = tasks
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep

    def decide(self, call: ChatCall) -> Decision:
        """Where `call` goes (see `decide`)."""
        return decide(call, policy=self.policy, named=self.named, default_route=next(iter(self.routes)))

    async def _look_up(self, call: ChatCall, decision: Decision) -> Ticket:
        if self.cache is None:
            return Ticket(status="bypass")
        return await self.cache.begin(call, decision, self.routes[decision.route])

    async def complete(self, call: ChatCall) -> tuple[Completion, Outcome]:
        """Answer `call` in one response: from the cache, or from the decided route (or its fallbacks)."""
        decision = self.decide(call)
        ticket = await self._look_up(call, decision)
        if ticket.hit is not None:
            return Completion(body=to_completion(ticket.hit), model=None, usage=None), Outcome(
                decision.route, decision.rule, cache="hit"
            )
        self._shadow(call, decision)
        try:
            name, completion, failed = await self._dispatch(decision, lambda route: route.complete(call))
        except BaseException as exc:
            _unfinished(ticket, exc)
            raise
        ticket.finish(entry(COMPLETION, completion.body) if name == decision.route else None)
        if completion.usage is not None:
            self._account(call, name, completion.usage)
        return completion, Outcome(name, decision.rule, failed, ticket.status)

    async def stream(self, call: ChatCall) -> tuple[Relay, Outcome]:
        """Answer `call` as SSE bytes; an error before the first event (on every route tried) raises here."""
        decision = self.decide(call)
        ticket = await self._look_up(call, decision)
        wants_usage = call.request.wants_usage_chunk
        if ticket.hit is not None:
            relay = replay_relay(to_stream(ticket.hit, wants_usage=wants_usage))
            return relay, Outcome(decision.route, decision.rule, cache="hit")
        self._shadow(call, decision)

        def open_on(route: Route) -> Awaitable[Relay]:
            on_usage = lambda usage: self._account(call, route.name, usage)  # noqa: E731
            source = route.stream(call)
            if route.name == decision.route:  # a fallback's answer is not the decided route's to cache
                source = ticket.recording(source)
            return open_relay(source, wants_usage=wants_usage, on_usage=on_usage)

        try:
            name, relay, failed = await self._dispatch(decision, open_on)
        except BaseException as exc:
            _unfinished(ticket, exc)
            raise
        if name != decision.route:
            ticket.finish(None)
        return relay, Outcome(name, decision.rule, failed, ticket.status)

    async def _dispatch(
        self, decision: Decision, once: Callable[[Route], Awaitable[T]]
    ) -> tuple[str, T, tuple[str, ...]]:
        """Run `once` on the decided route, then on each fallback while the failure is the route's."""
        failed: list[str] = []
        candidates = (decision.route, *decision.fallbacks)
        for index, name in enumerate(candidates):
            last = index == len(candidates) - 1
            try:
                return name, await self._on_route(name, once, skip_when_open=not last), tuple(failed)
            except ProxyError as exc:
                if not _is_route_failure(exc) or last:
                    # The error response shows the decision too: which route failed, sent by which rule.
                    exc.headers = {**exc.headers, **dict(Outcome(name, decision.rule, tuple(failed)).header_items())}
                    raise
                logger.warning("route %s failed (%s %s); falling back", name, exc.status, exc.message)
                failed.append(name)
        raise AssertionError("unreachable: the last route's error is raised")  # pragma: no cover

    async def _on_route(self, name: str, once: Callable[[Route], Awaitable[T]], *, skip_when_open: bool) -> T:
        """Run `once` on route `name`, retrying with backoff.

        With `skip_when_open`, an open circuit sends the request on to the fallbacks at once. The last
        candidate is always tried, open or not (as Envoy's panic mode does): failing fast there would
        turn a degraded upstream into a full outage. Its outcomes still move the breaker.
        """
        breaker = self.breakers[name]
        for attempt in itertools.count():
            if skip_when_open and not breaker.allow():
                raise RouteUnavailableError(f"The route '{name}' is failing; its fallbacks answer until it recovers.")
            try:
                result = await once(self.routes[name])
            except ProxyError as exc:
                if not _is_route_failure(exc):
                    raise
                breaker.record_failure()
                if attempt >= self._retry.attempts or not _retryable(exc):
                    raise
                await self._sleep(self._backoff(attempt, exc))
            else:
                breaker.record_success()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int, error: ProxyError) -> float:
        """Seconds before the next try: the upstream's `retry-after`, or full-jitter exponential backoff."""
        cap = self._retry.max_backoff
        with contextlib.suppress(KeyError, ValueError):
            return min(float(error.headers["retry-after"]), cap)
        return self._rng.uniform(0, min(cap, self._retry.backoff * 2**attempt))

    def _shadow(self, call: ChatCall, decision: Decision) -> None:
        if decision.shadow is not None and decision.shadow in self.routes:
            headers = {**call.headers, "x-request-id": f"{call.headers.get('x-request-id', 'req')}-shadow"}
            shadow_call = ChatCall(request=call.request, raw=call.raw, headers=headers, caller=call.caller)
            self._tasks.spawn(self._run_shadow(shadow_call, decision.shadow), name=f"shadow:{decision.shadow}")

    async def _run_shadow(self, call: ChatCall, name: str) -> None:
        """Send the copy; its answer is dropped, its outcome logged."""
        route, started = self.routes[name], time.perf_counter()
        try:
            if call.request.stream:
                async with contextlib.aclosing(route.stream(call)) as events:
                    async for _ in events:
                        pass
            else:
                await route.complete(call)
        except ProxyError as exc:
            outcome = f"failed with {exc.status} ({exc.message})"
        else:
            outcome = "answered"
        elapsed = (time.perf_counter() - started) * 1000
        logger.info("shadow %s to route %s %s in %.0f ms", call.headers.get("x-request-id"), name, outcome, elapsed)

    def _account(self, call: ChatCall, route: str, usage: Usage) -> None:
        # Cost and metrics hang off this one place, shared by both modes and every route.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s on route %s used %d prompt + %d completion tokens",
                call.headers.get("x-request-id"),
                route,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
