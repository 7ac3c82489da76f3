"""`proxy.dispatch`: the deadline over attempts, retries and fallbacks; the breaker counts a request once.

The routes are fakes at the `Route` boundary (a hung one waits on an event that never comes); sleeping and the
breaker's clock are injected. Deadlines here are short real ones: what is checked is who answered, never how
fast.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest

from policies import Decision
from proxy.accounting.tally import Tally
from proxy.config.sections import BreakerSettings, DeadlineSettings, RetrySettings
from proxy.endpoints.chat import CHAT
from proxy.outcome import OutcomeError
from proxy.pipeline import Pipeline
from proxy.tasks import BackgroundTasks
from proxy.wire.errors import DeadlineExceededError, InvalidRequestError, UpstreamError, UpstreamRateLimitError
from routes import Answer, AnswerStream, Call, ChatCall
from tests.unit.test_pipeline import RAW, FakeRoute, FixedPolicy, Sleeps, state


class HungRoute(FakeRoute):
    """Does not answer (as a stalled upstream): every attempt waits until it is cut, or fails the test."""

    async def complete(self, call: ChatCall) -> Answer:
        self.calls += 1
        await asyncio.sleep(60)  # a deadline that does not hold fails the test here, rather than hanging it
        raise AssertionError(f"the attempt on {self.name} was not cut by the deadline")

    async def stream(self, call: ChatCall) -> AnswerStream:
        return await self.complete(call)  # type: ignore[return-value]  # never returns


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def dispatching(
    *routes: FakeRoute,
    fallbacks: tuple[str, ...] = (),
    attempts: int = 2,
    failures: int = 2,
    count_rate_limits: bool = False,
    deadline: DeadlineSettings | None = None,
    rule_deadline: float | None = None,
    sleep: Sleeps | None = None,
    clock: Clock | None = None,
) -> Pipeline:
    chat = Pipeline(
        routes={route.name: route for route in routes},
        policy=None,
        retry=RetrySettings(attempts=attempts, backoff=0.5, max_backoff=4),
        breaker=BreakerSettings(failures=failures, cooldown=30, count_rate_limits=count_rate_limits),
        deadline=deadline,
        tasks=BackgroundTasks(),
        rng=random.Random(7),
        sleep=sleep or Sleeps(),
        clock=clock or Clock(),
    )
    first = routes[0].name
    decision = Decision(first, "r", "test", fallbacks, deadline=rule_deadline)
    chat.policy = FixedPolicy(decision)  # type: ignore[assignment]  # duck-typed stand-in
    return chat


def call(deadline: str | None = None) -> ChatCall:
    """A chat call, with the client's `x-turnout-timeout` when `deadline` is given."""
    return Call(endpoint=CHAT, body=CHAT.decode(RAW), headers={"x-request-id": "req-1"}, deadline=deadline)


def streaming(deadline: str | None = None) -> ChatCall:
    raw = RAW.replace(b'"messages"', b'"stream":true,"messages"')
    return Call(endpoint=CHAT, body=CHAT.decode(raw), headers={"x-request-id": "req-1"}, deadline=deadline)


async def test_a_hung_route_leaves_its_fallback_time_to_answer_within_the_deadline() -> None:
    hung, backup = HungRoute("a"), FakeRoute("b")
    tally = Tally()
    answer, outcome = await dispatching(hung, backup, fallbacks=("b",)).complete(CHAT, call(deadline="0.2"), tally)
    assert answer.model == "b"
    assert outcome.fallback_from == ("a",)
    assert (hung.calls, backup.calls) == (1, 1)  # its share of the deadline spent, no retry of the hung route
    assert tally.upstream_errors == [("a", "timeout")]


async def test_a_rules_deadline_applies_without_a_header() -> None:
    hung, backup = HungRoute("a"), FakeRoute("b")
    _, outcome = await dispatching(hung, backup, fallbacks=("b",), rule_deadline=0.2).complete(CHAT, call())
    assert outcome.route == "b"


async def test_a_hung_stream_falls_back_before_its_first_byte_within_the_deadline() -> None:
    hung, backup = HungRoute("a"), FakeRoute("b")
    relay, outcome = await dispatching(hung, backup, fallbacks=("b",)).stream(CHAT, streaming(deadline="0.2"))
    body = b"".join([chunk async for chunk in relay])
    assert b'"content":"b"' in body
    assert outcome.fallback_from == ("a",)


async def test_when_the_deadline_passes_the_client_gets_a_504_timeout() -> None:
    chat = dispatching(HungRoute("a"), HungRoute("b"), fallbacks=("b",))
    with pytest.raises(OutcomeError) as caught:
        await chat.complete(CHAT, call(deadline="0.1"))
    error = caught.value.error
    assert isinstance(error, DeadlineExceededError)
    assert (error.status, error.type, error.instance_code) == (504, "timeout_error", "timeout")
    assert caught.value.outcome.fallback_from == ("a",)


async def test_a_header_past_the_max_is_cut_to_it() -> None:
    settings = DeadlineSettings(default=600, max=0.1)
    chat = dispatching(HungRoute("a"), deadline=settings)
    with pytest.raises(OutcomeError, check=lambda failed: isinstance(failed.error, DeadlineExceededError)):
        await chat.complete(CHAT, call(deadline="3600"))


async def test_a_bad_header_is_a_400_before_any_route_is_tried() -> None:
    route = FakeRoute("a")
    with pytest.raises(InvalidRequestError) as caught:
        await dispatching(route).complete(CHAT, call(deadline="forever"))
    assert caught.value.status == 400
    assert route.calls == 0


async def test_no_retry_whose_wait_would_pass_the_routes_share_of_the_deadline() -> None:
    sleeps = Sleeps()
    limited = UpstreamRateLimitError("slow down", headers={"retry-after": "3"})
    primary, backup = FakeRoute("a", limited), FakeRoute("b")
    chat = dispatching(primary, backup, fallbacks=("b",), sleep=sleeps)
    _, outcome = await chat.complete(CHAT, call(deadline="4"))  # a's share: 4 s less 2 s held back
    assert sleeps.waits == []
    assert (primary.calls, outcome.route) == (1, "b")


async def test_a_request_with_its_retries_is_one_failure_of_the_breaker() -> None:
    primary, backup = FakeRoute("a", *[UpstreamError("x")] * 6), FakeRoute("b")
    chat = dispatching(primary, backup, fallbacks=("b",), attempts=2, failures=2)
    await chat.complete(CHAT, call())
    assert primary.calls == 3
    assert state(chat, "a") == "closed"
    await chat.complete(CHAT, call())
    assert state(chat, "a") == "open"


async def test_429s_do_not_move_the_breaker_unless_counted() -> None:
    def limited() -> list[Any]:
        return [UpstreamRateLimitError("slow down")] * 3

    quiet = dispatching(FakeRoute("a", *limited()), FakeRoute("b"), fallbacks=("b",), attempts=0, failures=1)
    for _ in range(3):
        assert (await quiet.complete(CHAT, call()))[1].route == "b"
    assert state(quiet, "a") == "closed"
    counted = dispatching(
        FakeRoute("a", *limited()), FakeRoute("b"), fallbacks=("b",), attempts=0, failures=1, count_rate_limits=True
    )
    await counted.complete(CHAT, call())
    assert state(counted, "a") == "open"


async def test_a_probe_that_met_an_uncounted_429_frees_the_next_probe() -> None:
    clock = Clock()
    outcomes = [UpstreamError("x"), UpstreamRateLimitError("slow down")]
    primary, backup = FakeRoute("a", *outcomes), FakeRoute("b")
    chat = dispatching(primary, backup, fallbacks=("b",), attempts=0, failures=1, clock=clock)
    await chat.complete(CHAT, call())
    assert state(chat, "a") == "open"
    clock.now += 30
    await chat.complete(CHAT, call())  # the probe: a 429, not counted
    assert state(chat, "a") == "half_open"
    _, outcome = await chat.complete(CHAT, call())  # the next probe goes through, and the route answers
    assert (primary.calls, outcome.route) == (3, "a")
    assert state(chat, "a") == "closed"


async def test_an_open_breaker_logs_when_it_opens_and_closes_not_per_request(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    primary, backup = FakeRoute("a", UpstreamError("x")), FakeRoute("b")
    chat = dispatching(primary, backup, fallbacks=("b",), attempts=0, failures=1, clock=clock)
    with caplog.at_level(logging.INFO):
        for _ in range(5):  # the first fails and opens it; four more are turned away while it is open
            await chat.complete(CHAT, call())
        clock.now += 30
        await chat.complete(CHAT, call())  # the probe answers
    breaker_lines = [record.getMessage() for record in caplog.records if record.name == "turnout.breaker"]
    assert len(breaker_lines) == 2
    assert "opened" in breaker_lines[0]
    assert "closed" in breaker_lines[1]
    fallback_lines = [record for record in caplog.records if "falling back" in record.getMessage()]
    assert len(fallback_lines) == 1  # the real failure; not the four turned away
