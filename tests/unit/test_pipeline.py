"""`Pipeline` dispatch: retries with backoff, fallbacks, circuit breakers, shadows, headers.

The routes are fakes at the `Route` boundary; sleeping and the clock are injected.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from policies import Decision
from proxy.accounting.recorder import Recorder
from proxy.config.sections import BreakerSettings, RetrySettings
from proxy.endpoints.chat import CHAT
from proxy.outcome import Outcome, OutcomeError
from proxy.pipeline import Pipeline
from proxy.tasks import BackgroundTasks
from proxy.wire.errors import (
    ProxyError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    upstream_status_error,
)
from proxy.wire.schemas import Usage
from proxy.wire.sse import DONE_EVENT
from routes import Answer, AnswerStream, Call, ChatCall

RAW = b'{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}'


class FakeRoute:
    """Answers with the given outcomes in turn: a ProxyError to raise, or "ok"."""

    cache_scope = ""
    endpoints = frozenset({"chat"})

    def __init__(self, name: str, *outcomes: Any) -> None:
        self.name = name
        self.model: str | None = None
        self.outcomes = list(outcomes)
        self.calls = 0

    def _next(self) -> Any:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, ProxyError):
            raise outcome
        return outcome

    async def complete(self, call: ChatCall) -> Answer:
        self._next()
        return Answer(body=f'{{"route":"{self.name}"}}'.encode(), model=self.name, usage=Usage(total_tokens=1))

    async def stream(self, call: ChatCall) -> AnswerStream:
        return AnswerStream(events=self._events())

    async def _events(self) -> AsyncGenerator[bytes, None]:
        self._next()
        yield b'data: {"choices":[{"delta":{"content":"' + self.name.encode() + b'"}}]}\n\n' + DONE_EVENT


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def pipeline(
    *routes: FakeRoute,
    attempts: int = 2,
    failures: int = 5,
    sleep: Sleeps | None = None,
    recorder: Recorder | None = None,
) -> Pipeline:
    return Pipeline(
        routes={route.name: route for route in routes},
        policy=None,
        retry=RetrySettings(attempts=attempts, backoff=0.5, max_backoff=4),
        breaker=BreakerSettings(failures=failures, cooldown=30),
        tasks=BackgroundTasks(),
        rng=random.Random(7),
        sleep=sleep or Sleeps(),
        recorder=recorder,
    )


def call(raw: bytes = RAW) -> ChatCall:
    return Call(endpoint=CHAT, body=CHAT.decode(raw), headers={"x-request-id": "req-1"})


class FixedPolicy:
    """Stands in for the policy engine (tested on its own): every request gets the same decision."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision

    def decide(self, features: Any) -> Decision:
        return self.decision


def with_fallback(chat: Pipeline, route: str, *fallbacks: str) -> Pipeline:
    """Make every decision `route` with `fallbacks`."""
    decision = Decision(route=route, rule="r", reason="test", fallbacks=fallbacks, shadow=None)
    chat.policy = FixedPolicy(decision)  # type: ignore[assignment]  # duck-typed stand-in
    return chat


async def test_retries_a_failing_route_with_growing_jittered_waits() -> None:
    sleeps = Sleeps()
    primary = FakeRoute("a", UpstreamError("boom"), UpstreamTimeoutError("slow"))
    _, outcome = await pipeline(primary, sleep=sleeps).complete(CHAT, call())
    assert primary.calls == 3
    assert outcome == Outcome(route="a", rule="default")
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.5
    assert 0 <= sleeps.waits[1] <= 1.0


async def test_honours_retry_after_up_to_the_cap() -> None:
    sleeps = Sleeps()
    limited = UpstreamRateLimitError("slow down", headers={"retry-after": "2"})
    too_long = UpstreamRateLimitError("slow down", headers={"retry-after": "60"})
    await pipeline(FakeRoute("a", limited, too_long), sleep=sleeps).complete(CHAT, call())
    assert sleeps.waits == [2.0, 4.0]


async def test_falls_back_after_the_retries_and_says_so() -> None:
    primary, backup = FakeRoute("a", *[UpstreamError("x")] * 3), FakeRoute("b")
    chat = with_fallback(pipeline(primary, backup), "a", "b")
    completion, outcome = await chat.complete(CHAT, call())
    assert (primary.calls, backup.calls) == (3, 1)
    assert completion.model == "b"
    assert outcome.fallback_from == ("a",)
    assert (b"x-turnout-fallback-from", b"a") in outcome.headers()


async def test_a_wrong_key_or_model_falls_back_without_retrying() -> None:
    primary, backup = FakeRoute("a", upstream_status_error(401, b"{}")), FakeRoute("b")
    await with_fallback(pipeline(primary, backup), "a", "b").complete(CHAT, call())
    assert (primary.calls, backup.calls) == (1, 1)


async def test_never_retries_or_falls_back_on_the_callers_400() -> None:
    primary, backup = FakeRoute("a", UpstreamRejectedError("bad", status_code=400)), FakeRoute("b")
    with pytest.raises(OutcomeError, check=lambda failed: isinstance(failed.error, UpstreamRejectedError)):
        await with_fallback(pipeline(primary, backup), "a", "b").complete(CHAT, call())
    assert (primary.calls, backup.calls) == (1, 0)


async def test_the_last_routes_error_reaches_the_caller() -> None:
    primary, backup = FakeRoute("a", *[UpstreamError("x")] * 3), FakeRoute("b", *[UpstreamTimeoutError("t")] * 3)
    with pytest.raises(OutcomeError, check=lambda failed: isinstance(failed.error, UpstreamTimeoutError)):
        await with_fallback(pipeline(primary, backup), "a", "b").complete(CHAT, call())


async def test_an_open_circuit_sends_requests_straight_to_the_fallback() -> None:
    primary, backup = FakeRoute("a", *[UpstreamError("x")] * 4), FakeRoute("b")
    chat = with_fallback(pipeline(primary, backup, attempts=1, failures=2), "a", "b")
    await chat.complete(CHAT, call())
    assert state(chat, "a") == "closed"  # one failed request (of two attempts) is one failure
    await chat.complete(CHAT, call())
    assert state(chat, "a") == "open"
    _, outcome = await chat.complete(CHAT, call())
    assert primary.calls == 4  # not tried again while open
    assert outcome.fallback_from == ("a",)


async def test_the_last_route_is_tried_even_with_its_circuit_open() -> None:
    route = FakeRoute("a", *[UpstreamError("x")] * 2)
    chat = pipeline(route, attempts=0, failures=2)
    for _ in range(2):
        with pytest.raises(OutcomeError, check=lambda failed: isinstance(failed.error, UpstreamError)):
            await chat.complete(CHAT, call())
    assert state(chat, "a") == "open"
    _, outcome = await chat.complete(CHAT, call())  # nothing to fall back to: tried anyway, and it recovered
    assert route.calls == 3
    assert outcome.route == "a"
    assert state(chat, "a") == "closed"


def state(chat: Pipeline, route: str) -> str:
    return chat.breakers[route].state


async def test_a_stream_falls_back_before_its_first_byte() -> None:
    primary, backup = FakeRoute("a", *[UpstreamError("x")] * 3), FakeRoute("b")
    chat = with_fallback(pipeline(primary, backup), "a", "b")
    relay, outcome = await chat.stream(CHAT, call(RAW.replace(b'"messages"', b'"stream":true,"messages"')))
    body = b"".join([chunk async for chunk in relay])
    assert b'"content":"b"' in body
    assert body.endswith(DONE_EVENT)
    assert outcome.route == "b"
    assert outcome.fallback_from == ("a",)


async def test_a_shadow_copy_runs_in_the_background_and_never_reaches_the_caller() -> None:
    primary, shadow = FakeRoute("a"), FakeRoute("b", UpstreamError("the shadow fails"))
    chat = pipeline(primary, shadow)
    decision = Decision(route="a", rule="r", reason="test", shadow="b")
    chat.policy = FixedPolicy(decision)  # type: ignore[assignment]  # duck-typed stand-in
    completion, outcome = await chat.complete(CHAT, call())
    assert completion.model == "a"
    await chat._tasks.drain(1)
    assert shadow.calls == 1
    assert outcome.route == "a"


async def test_only_routes_that_serve_the_calls_endpoint_are_tried() -> None:
    other_kind, backup = FakeRoute("a"), FakeRoute("b")
    other_kind.endpoints = frozenset({"embeddings"})  # an instance attribute: this route alone serves no chat
    chat = with_fallback(pipeline(other_kind, backup), "a", "b")
    answer, outcome = await chat.complete(CHAT, call())
    assert (other_kind.calls, backup.calls, answer.model, outcome.route) == (0, 1, "b", "b")
    alone = with_fallback(pipeline(other_kind), "a")
    with pytest.raises(OutcomeError) as refused:
        await alone.complete(CHAT, call())
    assert (refused.value.error.status, refused.value.error.instance_code) == (400, "unsupported_endpoint")
    assert refused.value.outcome.route == "a"
