"""`Pipeline`: the explicit path of every request: decide → cache → dispatch (retries, fallbacks) → account.

Endpoint-agnostic: the handlers give it a `Call` and the codec of its endpoint kind (`proxy.endpoints`),
and write out what it returns. What differs between endpoint kinds (features, cache keys, usage, stream
framing, replay) is asked of the codec; what a route adds to the response comes back in its result;
a request that fails raises `OutcomeError`, its error with the outcome it belongs to.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from policies import Decision, PolicyEngine
from proxy.accounting.cost import PriceTable
from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import Tally
from proxy.billing import Billing
from proxy.cache.lookup import AnswerCache, Ticket
from proxy.config.sections import BreakerSettings, DeadlineSettings, RetrySettings
from proxy.deadline import Deadline, client_deadline, deadline_seconds
from proxy.decide import decide_by_model, decide_semantically
from proxy.dispatch import Dispatcher
from proxy.endpoints.base import Codec
from proxy.endpoints.chat import CHAT
from proxy.estimate import AnswerSizes
from proxy.outcome import Outcome, OutcomeError
from proxy.pairing import Background, Pairing, Trial, canary_headers, judge_body, unstreamed, with_canary
from proxy.semantic import SemanticScorer
from proxy.shadow import ShadowSpent, run_shadow
from proxy.streaming import Relay, open_relay, replay_relay
from proxy.tasks import BackgroundTasks
from proxy.wire.errors import ProxyError
from proxy.wire.schemas import Usage
from routes import Answer, AnswerStream, Call, Route
from routes.kind import CONVERSATIONS

__all__ = ["CALLER_HEADER", "Admit", "Pipeline", "Steer"]

logger = logging.getLogger("turnout.pipeline")

CALLER_HEADER = "x-turnout-caller"
"""Who is calling, for `caller` conditions and sticky splits, when keys are off (with keys: the key's name)."""

Steer = Callable[[Decision], Decision]
"""Turns the policy's decision into the one to follow (a Responses request continuing a stored response goes to
the upstream that holds it: `proxy.response_homes`)."""

Admit = Callable[[Decision, Callable[[], Decimal]], Awaitable[None]]
"""Lets a call in on its chosen route, reserving what its answer may cost (USD, worked out when a budget needs it),
or raises 403 or 429 (`proxy.gate`)."""


class Pipeline:
    """Decides where each call goes and gets it answered there, or on its fallbacks."""

    def __init__(
        self,
        *,
        routes: Mapping[str, Route],
        policy: PolicyEngine | None,
        default: Route | None = None,
        baseline: str | None = None,
        retry: RetrySettings,
        breaker: BreakerSettings,
        tasks: BackgroundTasks,
        deadline: DeadlineSettings | None = None,
        named: Mapping[str, str] | None = None,
        semantic: SemanticScorer | None = None,
        prices: PriceTable | None = None,
        recorder: Recorder | None = None,
        shadow_spent: ShadowSpent | None = None,
        cache: AnswerCache | None = None,
        pairing: Pairing | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = routes
        """The policy's routes (what `/readyz` lists)."""
        self.policy = policy
        self.default = default or next(iter(routes.values()))
        """The default upstream's route, for the kinds no rule is written for (embeddings, legacy completions)
        that no route serves for their model: a policy's route, or one of its own beside them (`proxy.lifespan`)."""
        self._routes = {**routes, self.default.name: self.default} if self.default.name not in routes else routes
        self._compared = routes[baseline].endpoints if baseline is not None else frozenset(CONVERSATIONS)
        """The kinds priced against the baseline: those its route serves (an embedding is no chat answer's match)."""
        self.named: Mapping[str, str] = named or {}
        """Model names that select a route directly (route names and aliases), when the policy allows it."""
        self.semantic = semantic
        """Computes meaning-based features when a rule needs them (None: the policy has no such rule)."""
        self.prices = prices or PriceTable()
        """Prices every answer (and its baseline); from the policy file's `prices` and `baseline`."""
        self._billing = Billing(self._routes, baseline=baseline, compared=self._compared)
        self._recorder = recorder
        """Given each finished shadow copy's tally: a shadow's tokens are spend too."""
        self._shadow_spent = shadow_spent  # a shadow copy's team and cost, for the team's budget (`proxy.access`)
        self.cache = cache
        """The response cache; None: every request bypasses it."""
        self.pairing = pairing
        """The parity rules' canaries and pairs (None: the policy has none)."""
        self._dispatcher = Dispatcher(self._routes, retry=retry, breaker=breaker, rng=rng, sleep=sleep, clock=clock)
        self.breakers = self._dispatcher.breakers
        self._deadline = deadline or DeadlineSettings()
        self._tasks = tasks
        self._sizes = AnswerSizes()

    async def decide(self, codec: Codec[Any], call: Call[Any]) -> Decision:
        """Where `call` goes (see `proxy.decide`); meaning-based features are computed once, when a rule needs them.

        The rules decide conversations only; a call of another kind goes where its `model` says (`decide_by_model`).
        """
        if codec.kind not in CONVERSATIONS:
            return decide_by_model(codec, call, routes=self.routes, named=self.named, default_route=self.default.name)
        default_route = next(iter(self.routes))
        return await decide_semantically(
            codec, call, policy=self.policy, named=self.named, default_route=default_route, scorer=self.semantic
        )

    async def _begin(
        self,
        codec: Codec[Any],
        call: Call[Any],
        tally: Tally,
        *,
        stream: bool,
        steer: Steer | None = None,
        admit: Admit | None = None,
    ) -> tuple[Decision, Ticket, Deadline, Trial | None]:
        """Decide (and `steer`, and a canary, and `admit`), then look the answer up in the form asked; a hit is priced.

        The request's deadline is set from its arrival (`proxy.deadline`); a bad `x-turnout-timeout` is a 400 first.
        """
        asked = client_deadline(call.deadline)
        try:
            decision = await self.decide(codec, call)
        finally:
            self._spent(call, tally)
        if steer is not None:
            decision = steer(decision)
        trial = None
        if self.pairing is not None:
            decision, trial = await self.pairing.trial(decision)
        tally.decided(decision.route, decision.rule, decision.reason, decision.log)
        if admit is not None:
            route = self._routes[decision.route]
            await admit(decision, functools.partial(self._sizes.reservation, self.prices, codec, call, decision, route))
        if self.cache is None:
            ticket = Ticket(status="bypass")
        else:
            try:
                ticket = await self.cache.begin(codec, call, decision, self._routes[decision.route], stream=stream)
            finally:
                self._spent(call, tally)
        tally.cache = ticket.status
        hit = ticket.hit
        if hit is not None and hit.model is not None and hit.usage is not None:
            self._account(codec, call, tally, decision.route, hit.model, hit.usage, cached=True)
        seconds = deadline_seconds(self._deadline, decision.deadline, asked)
        return decision, ticket, Deadline(seconds, tally.started, self._deadline.fallback_share), trial

    async def complete(
        self,
        codec: Codec[Any],
        call: Call[Any],
        tally: Tally | None = None,
        steer: Steer | None = None,
        admit: Admit | None = None,
    ) -> tuple[Answer, Outcome]:
        """Answer `call` in one response: from the cache, or from the decided route (or its fallbacks).

        `tally` gets the decision, the cache result, the attempts and the charge; `steer` may change the decision;
        `admit` lets the call in (or raises its caller's error) once its route is chosen.

        Raises:
            OutcomeError: no route could answer; the error to send, with the outcome it belongs to.
        """
        tally = Tally() if tally is None else tally
        decision, ticket, deadline, trial = await self._begin(
            codec, call, tally, stream=False, steer=steer, admit=admit
        )
        if ticket.hit is not None:
            answer = Answer(body=ticket.hit.body, model=tally.model, usage=tally.usage)
            headers = (*ticket.hit.headers, *canary_headers(trial))
            return answer, Outcome(decision.route, decision.rule, cache="hit", route_headers=headers)
        self._shadow(codec, call, decision)
        started = time.perf_counter()

        def complete_on(route: Route) -> Awaitable[Answer]:
            return route.complete(call)

        try:
            dispatched = await self._dispatcher.run(codec, call, decision, complete_on, tally, ticket.status, deadline)
            name, answer, failed = dispatched
        except OutcomeError as exc:
            ticket.finish(None)
            self._tried(codec, call, trial, tally, started, None, None)
            raise with_canary(exc, trial) from exc.__cause__
        except BaseException:
            ticket.finish(None)
            raise
        finally:
            self._spent(call, tally)
        ticket.finish(codec.stored(answer.body) if name == decision.route else None)
        if answer.usage is not None:
            self._account(codec, call, tally, name, answer.model, answer.usage)
        self._tried(codec, call, trial, tally, started, name, answer.body)
        return answer, Outcome(name, decision.rule, failed, ticket.status, (*answer.headers, *canary_headers(trial)))

    async def stream(
        self,
        codec: Codec[Any],
        call: Call[Any],
        tally: Tally | None = None,
        steer: Steer | None = None,
        admit: Admit | None = None,
    ) -> tuple[Relay, Outcome]:
        """Answer `call` as SSE bytes; an error before the first event (on every route tried) raises here.

        `steer` may change the decision; `admit` lets the call in once its route is chosen.

        Raises:
            OutcomeError: no route could open a stream; the error to send, with the outcome it belongs to.
        """
        tally = Tally() if tally is None else tally
        decision, ticket, deadline, trial = await self._begin(codec, call, tally, stream=True, steer=steer, admit=admit)
        if ticket.hit is not None:
            headers = (*ticket.hit.headers, *canary_headers(trial))
            hit = Outcome(decision.route, decision.rule, cache="hit", route_headers=headers)
            return replay_relay(ticket.hit.body), hit
        self._shadow(codec, call, decision)
        started = time.perf_counter()
        wants_usage = codec.wants_usage(call.body)

        async def open_on(route: Route) -> tuple[Relay, AnswerStream]:
            reported = False

            def on_usage(usage: Usage, model: str | None) -> None:
                nonlocal reported
                reported = True
                self._account(codec, call, tally, route.name, model, usage)

            def on_cut(sent: int) -> None:
                # The stream ended without its usage (the client left, the upstream broke off or sent none):
                # priced from an estimate, and marked so.
                nonlocal reported
                if not reported:
                    reported = True
                    self._billing.estimate(self.prices, codec, call, tally, route.name, sent)

            def on_end(error: ProxyError | None, sent: int) -> bytes:
                # Headers left before the usage came: the cost ends the stream as SSE comments instead.
                if error is not None:
                    tally.upstream_error(route.name, "midstream")
                    tally.failure = error
                on_cut(sent)
                comments = "".join(f": {name}: {value}\n" for name, value in tally.cost_items())
                return f"{comments}\n".encode() if comments else b""

            opened = await route.stream(call)
            events = opened.events
            if route.name == decision.route:  # a fallback's answer is not the decided route's to cache
                events = ticket.recording(events, codec)
            events = self._watched(events, codec, call, trial, tally, started, route.name)
            relay = await open_relay(
                events, codec, wants_usage=wants_usage, on_usage=on_usage, on_end=on_end, on_cut=on_cut
            )
            return relay, opened

        try:
            dispatched = await self._dispatcher.run(codec, call, decision, open_on, tally, ticket.status, deadline)
            name, (relay, opened), failed = dispatched
        except OutcomeError as exc:
            ticket.finish(None)
            self._tried(codec, call, trial, tally, started, None, None)
            raise with_canary(exc, trial) from exc.__cause__
        except BaseException:
            ticket.finish(None)
            raise
        finally:
            self._spent(call, tally)
        if name != decision.route:
            ticket.finish(None)
        self._tried(codec, call, trial, tally, started, None, None, unless=name)  # served: told at the stream's end
        return relay, Outcome(name, decision.rule, failed, ticket.status, (*opened.headers, *canary_headers(trial)))

    def _shadow(self, codec: Codec[Any], call: Call[Any], decision: Decision) -> None:
        if decision.shadow is not None and decision.shadow in self.routes:
            headers = {**call.headers, "x-request-id": f"{call.headers.get('x-request-id', 'req')}-shadow"}
            shadow_call = Call(call.endpoint, call.body, headers, caller=call.caller, team=call.team)
            account, spent = (
                functools.partial(self._account, codec, shadow_call),
                functools.partial(self._spent, shadow_call),
            )
            route, recorder = self._routes[decision.shadow], self._recorder
            task = run_shadow(codec, shadow_call, route, account, spent, recorder, self._shadow_spent)
            self._tasks.spawn(task, name=f"shadow:{decision.shadow}")

    def _tried(
        self,
        codec: Codec[Any],
        call: Call[Any],
        trial: Trial | None,
        tally: Tally,
        started: float,
        answered_by: str | None,
        body: bytes | None,
        unless: str | None = None,
    ) -> None:
        """Hand a parity rule's request to its pairing in the background (unless its route was `unless`)."""
        if trial is None or self.pairing is None or trial.served == unless:
            return
        task = self.pairing.finished(
            trial,
            call.headers.get("x-request-id", ""),
            answered_by=answered_by,
            body=body,
            latency_ms=(time.perf_counter() - started) * 1000,
            cost=tally.cost,
            background=self._background(codec, call),
        )
        self._tasks.spawn(task, name=f"parity:{trial.experiment.rule}")

    def _watched(
        self,
        events: AsyncGenerator[bytes, None],
        codec: Codec[Any],
        call: Call[Any],
        trial: Trial | None,
        tally: Tally,
        started: float,
        route: str,
    ) -> AsyncGenerator[bytes, None]:
        """A parity rule's stream on its chosen route: kept for its pair if sampled, told to the pairing at its end."""
        if trial is None or self.pairing is None or route != trial.served:
            return events

        def served(ended: bool, whole: bytes | None) -> None:
            self._tried(codec, call, trial, tally, started, trial.served if ended else None, whole)

        return self.pairing.recording(events, codec, keep=trial.sampled, done=served)

    def _background(self, codec: Codec[Any], call: Call[Any]) -> Background:
        """A pair's background calls (the copy of `call` to the other route, the judge's), priced as shadow copies."""

        def send(kind_of: Codec[Any], body: Any, route: str, kind: str) -> Awaitable[tuple[Tally, bytes | None]]:
            headers = {**call.headers, "x-request-id": f"{call.headers.get('x-request-id', 'req')}-{kind}"}
            copied = Call(kind_of, body, headers, caller=call.caller, team=call.team)
            account, spent = functools.partial(self._account, kind_of, copied), functools.partial(self._spent, copied)
            return run_shadow(kind_of, copied, self._routes[route], account, spent, self._recorder, self._shadow_spent)

        whole = unstreamed(codec, call.raw) if codec.streams(call.body) else call.body  # a pair compares whole answers
        return Background(
            lambda route, kind: send(codec, whole, route, kind),
            lambda route, messages: send(
                CHAT, judge_body(self._routes[route].model or route, messages), route, "judge"
            ),
            call.raw,
        )

    def _spent(self, call: Call[Any], tally: Tally) -> None:
        """Charge `tally` with the embeddings the call's question was billed since the last look (then forgotten)."""
        spent = call.question.spent
        for embedding in spent:
            tally.embedded(self.prices, embedding.model, embedding.tokens)
        spent.clear()

    def _account(
        self,
        codec: Codec[Any],
        call: Call[Any],
        tally: Tally,
        route: str,
        model: str | None,
        usage: Usage,
        *,
        cached: bool = False,
        estimated: bool = False,
    ) -> None:
        """Price the usage `route` reported (`proxy.billing`: the tier, the counterfactual baseline)."""
        if not (cached or estimated):  # what the route's answers are like, for the next budget reservations
            self._sizes.observe(route, codec.kind, usage.completion_tokens)
        self._billing.account(self.prices, codec, call, tally, route, model, usage, cached=cached, estimated=estimated)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s on route %s used %d prompt + %d completion tokens",
                call.headers.get("x-request-id"),
                route,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
