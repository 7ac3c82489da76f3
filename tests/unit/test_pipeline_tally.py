"""What `Pipeline` writes in a request's `Tally`: decision, attempts, errors, breakers, timing and charge."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policies import Decision
from proxy.accounting.cost import PriceTable
from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import Tally
from proxy.endpoints.chat import CHAT
from proxy.outcome import OutcomeError
from proxy.wire.errors import UpstreamError, UpstreamRejectedError, UpstreamTimeoutError
from proxy.wire.schemas import Usage
from tests.unit.test_pipeline import FakeRoute, FixedPolicy, call, pipeline, with_fallback

USAGE = Usage(total_tokens=1)  # what FakeRoute answers with


async def test_a_plain_answer_is_decided_timed_and_priced() -> None:
    chat = pipeline(FakeRoute("gpt-4"))
    chat.prices = PriceTable(baseline_model="gpt-4")
    tally = Tally()
    await chat.complete(CHAT, call(), tally)
    assert (tally.route, tally.rule, tally.fallback_from) == ("gpt-4", "default", ())
    assert tally.model == "gpt-4"  # FakeRoute reports its name as the model that answered
    assert tally.usage == USAGE
    assert tally.charge is not None
    assert tally.cost == Decimal(0)  # no prompt or completion tokens
    assert tally.answered_at is not None
    assert tally.upstream_seconds > 0
    assert (tally.upstream_errors, tally.retries, tally.circuits) == (None, None, None)


async def test_retries_fallbacks_errors_and_breakers_are_noted() -> None:
    primary = FakeRoute("a", UpstreamError("boom"), UpstreamTimeoutError("slow"), UpstreamError("again"))
    chat = with_fallback(pipeline(primary, FakeRoute("b")), "a", "b")
    tally = Tally()
    await chat.complete(CHAT, call(), tally)
    assert (tally.route, tally.rule, tally.fallback_from) == ("b", "r", ("a",))
    assert tally.retries == ["a", "a"]
    assert tally.upstream_errors == [("a", "connection"), ("a", "timeout"), ("a", "connection")]
    assert tally.circuits == [("a", "closed")]  # one failed request (three attempts) is 1 of the 5 that open it


async def test_an_open_circuit_is_noted_and_its_recovery_too() -> None:
    primary = FakeRoute("a", *[UpstreamError("down")] * 2)
    chat = with_fallback(pipeline(primary, FakeRoute("b"), attempts=0, failures=2), "a", "b")
    first, second, third = Tally(), Tally(), Tally()
    await chat.complete(CHAT, call(), first)
    await chat.complete(CHAT, call(), second)
    assert second.circuits == [("a", "open")]
    await chat.complete(CHAT, call(), third)  # skipped: the circuit is open
    assert third.upstream_errors == [("a", "circuit_open")]
    assert third.route == "b"
    chat.breakers["a"]._opened_at = -1e9  # the cooldown is over: a probe goes through and succeeds
    recovered = Tally()
    await chat.complete(CHAT, call(), recovered)
    assert (recovered.route, recovered.circuits) == ("a", [("a", "closed")])


async def test_a_failed_request_names_the_route_that_failed_last() -> None:
    chat = with_fallback(pipeline(FakeRoute("a", UpstreamRejectedError("bad")), FakeRoute("b")), "a", "b")
    tally = Tally()
    with pytest.raises(OutcomeError, check=lambda failed: isinstance(failed.error, UpstreamRejectedError)):
        await chat.complete(CHAT, call(), tally)
    assert (tally.route, tally.fallback_from, tally.charge) == ("a", (), None)


async def test_a_stream_without_usage_is_priced_from_an_estimate_and_says_so() -> None:
    chat = pipeline(FakeRoute("gpt-4"))
    tally = Tally(stream=True)
    relay, _ = await chat.stream(CHAT, call(), tally)
    assert tally.answered_at is not None
    chunks = [chunk async for chunk in relay]
    # FakeRoute's stream reports no usage: the client's prompt as estimated, a token per event relayed.
    assert tally.charge is not None
    assert tally.estimated
    assert tally.usage is not None
    assert tally.usage.completion_tokens > 0
    ending = b"".join(chunks)
    assert b": x-turnout-cost-usd: " in ending
    assert b": x-turnout-cost-estimated: true\n" in ending


async def test_each_shadow_copy_is_recorded_as_spend_on_its_route_with_its_errors() -> None:
    metrics = Metrics()
    routes = FakeRoute("a"), FakeRoute("b"), FakeRoute("c", UpstreamTimeoutError("slow"))
    chat = pipeline(*routes, recorder=Recorder(metrics))
    chat.prices = PriceTable(known_models=["b"])
    for shadow in ("b", "c"):
        chat.policy = FixedPolicy(Decision(route="a", rule="r", reason="test", shadow=shadow))  # type: ignore[assignment]
        await chat.complete(CHAT, call())
    await chat._tasks.drain(1)
    metrics.flush()

    def samples(name: str) -> dict[frozenset[tuple[str, str]], float]:
        found = (sample for family in metrics.registry.collect() for sample in family.samples)
        return {frozenset(sample.labels.items()): sample.value for sample in found if sample.name == name}

    prompt, completion = USAGE.prompt_tokens, USAGE.completion_tokens
    assert samples("turnout_tokens_total") == {  # the copy that answered, on its own route
        frozenset({("route", "b"), ("model", "b"), ("kind", "prompt")}): prompt,
        frozenset({("route", "b"), ("model", "b"), ("kind", "completion")}): completion,
    }
    assert samples("turnout_upstream_errors_total") == {frozenset({("route", "c"), ("kind", "timeout")}): 1}
    assert samples("turnout_requests_total") == {}  # a copy is no request of its own
