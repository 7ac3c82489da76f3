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

from policies import Decision, PolicyEngine
from proxy.accounting.cost import PriceTable
from proxy.accounting.tally import Tally, bind
from proxy.breaker import CircuitBreaker
from proxy.cache.lookup import AnswerCache, CacheStatus, Ticket
from proxy.config.sections import BreakerSettings, RetrySettings
from proxy.decide import decide_semantically
from proxy.endpoints.chat_replay import COMPLETION, entry
from proxy.semantic import SemanticScorer
from proxy.streaming import Relay, open_relay, replay_relay, take_usage
from proxy.tasks import BackgroundTasks
from proxy.wire.errors import ProxyError, RouteUnavailableError, UpstreamError, UpstreamRejectedError
from proxy.wire.schemas import Usage
from routes import ChatCall, Completion, Route

__all__ = ["CALLER_HEADER", "ChatPipeline", "Outcome"]

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
    route_headers: tuple[tuple[str, str], ...] = ()
    """Headers the answering route added (the RAG route's `x-turnout-sources`)."""

    def header_items(self) -> list[tuple[str, str]]:
        """The `x-turnout-*` response headers that show the decision."""
        items = [("x-turnout-route", self.route), ("x-turnout-rule", self.rule), ("x-turnout-cache", self.cache)]
        if self.fallback_from:
            items.append(("x-turnout-fallback-from", ",".join(self.fallback_from)))
        items.extend(self.route_headers)
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
        semantic: SemanticScorer | None = None,
        prices: PriceTable | None = None,
        record_shadow: Callable[[Tally], None] | None = None,
        cache: AnswerCache | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = routes
        self.policy = policy
        self.named: Mapping[str, str] = named or {}
        """Model names that select a route directly (route names and aliases), when the policy allows it."""
        self.semantic = semantic
        """Computes meaning-based features when a rule needs them (None: the policy has no such rule)."""
        self.prices = prices or PriceTable()
        """Prices every answer (and its baseline); from the policy file's `prices` and `baseline`."""
        self._record_shadow = record_shadow
        """Given each finished shadow copy's tally: a shadow's tokens are spend too."""
        self.cache = cache
        """The response cache; None: every request bypasses it."""
        self.breakers = {name: CircuitBreaker(breaker.failures, breaker.cooldown, clock) for name in routes}
        self._retry = retry
        self._tasks = tasks
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep

    async def decide(self, call: ChatCall) -> Decision:
        """Where `call` goes (see `decide`); meaning-based features are computed once, when a rule reaches them."""
        default_route = next(iter(self.routes))
        return await decide_semantically(
            call, policy=self.policy, named=self.named, default_route=default_route, scorer=self.semantic
        )

    async def _look_up(self, call: ChatCall, decision: Decision, tally: Tally, *, stream: bool) -> Ticket:
        """The cache's answer for `call` in the form asked, if any; a hit is priced (costs 0, saves its baseline)."""
        ticket = (
            Ticket(status="bypass")
            if self.cache is None
            else await self.cache.begin(call, decision, self.routes[decision.route], stream=stream)
        )
        tally.cache = ticket.status
        hit = ticket.hit
        if hit is not None and hit.model is not None and hit.usage is not None:
            tally.charge_for(self.prices, hit.model, hit.usage, cached=True)
        return ticket

    async def complete(self, call: ChatCall, tally: Tally | None = None) -> tuple[Completion, Outcome]:
        """Answer `call` in one response: from the cache, or from the decided route (or its fallbacks).

        `tally` gets the decision, the cache result, the attempts and the charge.
        """
        tally = Tally() if tally is None else tally
        bind(tally)  # embeddings spent deciding or retrieving are this request's
        decision = await self.decide(call)
        tally.decided(decision.route, decision.rule)
        ticket = await self._look_up(call, decision, tally, stream=False)
        if ticket.hit is not None:
            completion = Completion(body=ticket.hit.body, model=tally.model, usage=tally.usage)
            return completion, Outcome(decision.route, decision.rule, cache="hit")
        self._shadow(call, decision)

        def complete_on(route: Route) -> Awaitable[Completion]:
            call.reply_headers.clear()  # only the headers of the route that answers
            return route.complete(call)

        try:
            name, completion, failed = await self._dispatch(decision, complete_on, tally)
        except BaseException as exc:
            _unfinished(ticket, exc)
            raise
        ticket.finish(entry(COMPLETION, completion.body) if name == decision.route else None)
        if completion.usage is not None:
            self._account(call, tally, name, completion.model, completion.usage)
        return completion, Outcome(name, decision.rule, failed, ticket.status, tuple(call.reply_headers.items()))

    async def stream(self, call: ChatCall, tally: Tally | None = None) -> tuple[Relay, Outcome]:
        """Answer `call` as SSE bytes; an error before the first event (on every route tried) raises here."""
        tally = Tally() if tally is None else tally
        bind(tally)  # embeddings spent deciding or retrieving are this request's
        decision = await self.decide(call)
        tally.decided(decision.route, decision.rule)
        ticket = await self._look_up(call, decision, tally, stream=True)
        wants_usage = call.request.wants_usage_chunk
        if ticket.hit is not None:
            relay = replay_relay(ticket.hit.body)
            return relay, Outcome(decision.route, decision.rule, cache="hit")
        self._shadow(call, decision)

        def open_on(route: Route) -> Awaitable[Relay]:
            call.reply_headers.clear()

            def on_usage(usage: Usage, model: str | None) -> None:
                self._account(call, tally, route.name, model, usage)

            def on_end(error: ProxyError | None) -> bytes:
                # Headers left before the usage came: the cost ends the stream as SSE comments instead.
                if error is not None:
                    tally.upstream_error(route.name, "midstream")
                comments = "".join(f": {name}: {value}\n" for name, value in tally.cost_items())
                return f"{comments}\n".encode() if comments else b""

            source = route.stream(call)
            if route.name == decision.route:  # a fallback's answer is not the decided route's to cache
                source = ticket.recording(source)
            return open_relay(source, wants_usage=wants_usage, on_usage=on_usage, on_end=on_end)

        try:
            name, relay, failed = await self._dispatch(decision, open_on, tally)
        except BaseException as exc:
            _unfinished(ticket, exc)
            raise
        if name != decision.route:
            ticket.finish(None)
        return relay, Outcome(name, decision.rule, failed, ticket.status, tuple(call.reply_headers.items()))

    async def _dispatch(
        self, decision: Decision, once: Callable[[Route], Awaitable[T]], tally: Tally
    ) -> tuple[str, T, tuple[str, ...]]:
        """Run `once` on the decided route, then on each fallback while the failure is the route's."""
        failed: list[str] = []
        candidates = (decision.route, *decision.fallbacks)
        for index, name in enumerate(candidates):
            last = index == len(candidates) - 1
            tally.route, tally.fallback_from = name, tuple(failed)
            try:
                return name, await self._on_route(name, once, tally, skip_when_open=not last), tuple(failed)
            except ProxyError as exc:
                if not _is_route_failure(exc) or last:
                    # The error response shows the decision too: which route failed, sent by which rule.
                    exc.headers = {**exc.headers, **dict(Outcome(name, decision.rule, tuple(failed)).header_items())}
                    raise
                logger.warning("route %s failed (%s %s); falling back", name, exc.status, exc.message)
                failed.append(name)
        raise AssertionError("unreachable: the last route's error is raised")  # pragma: no cover

    async def _on_route(
        self, name: str, once: Callable[[Route], Awaitable[T]], tally: Tally, *, skip_when_open: bool
    ) -> T:
        """Run `once` on route `name`, retrying with backoff.

        With `skip_when_open`, an open circuit sends the request on to the fallbacks at once. The last
        candidate is always tried, open or not (as Envoy's panic mode does): failing fast there would
        turn a degraded upstream into a full outage. Its outcomes still move the breaker.
        """
        breaker = self.breakers[name]
        for attempt in itertools.count():
            if skip_when_open and not breaker.allow():
                error = RouteUnavailableError(f"The route '{name}' is failing; its fallbacks answer until it recovers.")
                tally.failed_attempt(name, error, retried=False)
                raise error
            started = time.perf_counter()
            try:
                result = await once(self.routes[name])
            except ProxyError as exc:
                tally.upstream_seconds += time.perf_counter() - started
                if not _is_route_failure(exc):
                    raise
                breaker.record_failure()
                tally.circuit(name, breaker.state)
                retry = attempt < self._retry.attempts and _retryable(exc)
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

    def _shadow(self, call: ChatCall, decision: Decision) -> None:
        if decision.shadow is not None and decision.shadow in self.routes:
            headers = {**call.headers, "x-request-id": f"{call.headers.get('x-request-id', 'req')}-shadow"}
            shadow_call = ChatCall(body=call.body, headers=headers, caller=call.caller)
            self._tasks.spawn(self._run_shadow(shadow_call, decision.shadow), name=f"shadow:{decision.shadow}")

    async def _run_shadow(self, call: ChatCall, name: str) -> None:
        """Send the copy; its answer is dropped, its outcome logged, its cost recorded."""
        route, started = self.routes[name], time.perf_counter()
        tally = Tally(shadow=True, stream=bool(call.request.stream))
        bind(tally)  # this task's own (it started with a copy of the request's context)
        tally.decided(name, "shadow")
        try:
            if call.request.stream:
                async with contextlib.aclosing(route.stream(call)) as events:
                    async for events_run in events:
                        take_usage(events_run, lambda usage, model: self._account(call, tally, name, model, usage))
            else:
                completion = await route.complete(call)
                if completion.usage is not None:
                    self._account(call, tally, name, completion.model, completion.usage)
        except ProxyError as exc:
            outcome = f"failed with {exc.status} ({exc.message})"
            tally.failed_attempt(name, exc, retried=False)
        else:
            outcome = "answered"
        if self._record_shadow is not None:
            self._record_shadow(tally)
        elapsed = (time.perf_counter() - started) * 1000
        logger.info("shadow %s to route %s %s in %.0f ms", call.headers.get("x-request-id"), name, outcome, elapsed)

    def _account(self, call: ChatCall, tally: Tally, route: str, model: str | None, usage: Usage) -> None:
        """Price the usage `route` reported: by the model that answered, else the route's, else the caller's."""
        answered_by = model or self.routes[route].model or call.request.model
        tally.charge_for(self.prices, answered_by, usage)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s on route %s used %d prompt + %d completion tokens",
                call.headers.get("x-request-id"),
                route,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
