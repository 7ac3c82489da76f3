"""Pairs through the evaluators, the gate and the canary, as the wiring will run them (issue 17, point 6, in
one process): a candidate that agrees with the reference climbs to 100%, one that disagrees on 20% of its
answers is rolled back with the gate's bound, and an error burst is rolled back by the guardrail."""

from __future__ import annotations

import random

import msgspec

from proxy.parity.answers import Pair
from proxy.parity.canary import Action, CanaryState, Event, GuardrailReadings, Status, initial, step
from proxy.parity.evaluate import Evaluation, build_evaluators, evaluate, gate_of
from proxy.parity.settings import CanarySettings, ParitySettings

PARITY = msgspec.convert({"reference": "gpt4", "evaluators": ["normalised"], "min_pairs": 30}, ParitySettings)
CANARY = msgspec.convert(
    {"candidate": "ft35", "min_pairs": 100, "guardrails": {"error_rate": 0.05, "min_requests": 20}}, CanarySettings
)
LABELS = ("billing", "refund", "shipping", "other")


def answer(text: str) -> dict[str, object]:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


async def canary_run(
    disagree: float, pairs: int, seed: int, errors: float = 0.0
) -> tuple[CanaryState, list[Event], int]:
    """Feed `pairs` pairs, one at a time; the candidate's label differs from the reference's in a `disagree`
    share, and a share `errors` of its requests fail. Returns the state, its events, and the pairs fed."""
    pick = random.Random(seed)
    evaluators = build_evaluators(PARITY.specs())
    state, events, evaluations = initial(CANARY), [], []
    at_step, failed = 0, 0
    for fed in range(1, pairs + 1):
        label = pick.choice(LABELS)
        other = pick.choice([candidate for candidate in LABELS if candidate != label])
        candidate = other if pick.random() < disagree else f" {label.title()}."  # the label, written otherwise
        evaluations.append(await evaluate(Pair(answer(candidate), answer(label)), evaluators))
        at_step += 1
        failed += pick.random() < errors
        readings = GuardrailReadings(requests=at_step, error_rate=failed / at_step)
        moved = step(state, CANARY, gate_of(evaluations, PARITY), at_step, readings)
        if moved.event is not None:
            events.append(moved.event)
            at_step, failed = 0, 0  # the next step counts its own pairs and requests
        state = moved.state
        if state.status in (Status.COMPLETE, Status.ROLLED_BACK):
            return state, events, fed
    return state, events, pairs


async def test_a_candidate_that_agrees_reaches_100_percent_in_the_configured_pairs():
    state, events, fed = await canary_run(disagree=0.0, pairs=1000, seed=1)
    assert state.status is Status.COMPLETE
    assert [event.to_share for event in events] == [5, 25, 50, 100]
    assert fed == 4 * CANARY.min_pairs  # each step waits for its own 100 pairs; the gate passed at 88
    assert all(event.action is Action.ADVANCE for event in events)


async def test_a_candidate_that_disagrees_on_a_fifth_is_rolled_back_with_the_bound():
    state, events, fed = await canary_run(disagree=0.2, pairs=1000, seed=2)
    assert state.status is Status.ROLLED_BACK
    assert state.share == 0
    (event,) = events
    assert event.action is Action.ROLLBACK
    assert event.gate is not None
    assert event.gate.upper < PARITY.margin
    assert f"Wilson bounds {event.gate.lower:.4f} to {event.gate.upper:.4f}, margin 0.95" in event.reason
    assert fed < 100  # the sequential test fails it well before a step's 100 pairs


async def test_an_error_burst_is_rolled_back_by_the_guardrail():
    state, events, _ = await canary_run(disagree=0.0, pairs=1000, seed=3, errors=0.3)
    assert state.status is Status.ROLLED_BACK
    assert events[-1].action is Action.ROLLBACK
    assert events[-1].reason.startswith("guardrail: error rate")
    assert events[-1].guardrails is not None
    assert events[-1].guardrails.requests >= CANARY.guardrails.min_requests


async def test_undecided_pairs_are_left_out_of_the_gate():
    evaluators = build_evaluators(PARITY.specs())
    tool_only = {"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}}]}
    evaluations: list[Evaluation] = [await evaluate(Pair(tool_only, answer("x")), evaluators) for _ in range(5)]
    evaluations += [await evaluate(Pair(answer("a"), answer("a")), evaluators) for _ in range(40)]
    result = gate_of(evaluations, PARITY)
    assert (result.pairs, result.successes) == (40, 40)
