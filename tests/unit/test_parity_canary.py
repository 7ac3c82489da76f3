"""The canary's settings and state machine: forward on a passing gate, back at once on a failing one or a
guardrail, and the team's pause, pin, resume and reset."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import yaml

from proxy.parity.canary import (
    Action,
    CanaryState,
    GuardrailReadings,
    Status,
    Transition,
    candidate_share,
    command,
    initial,
    step,
    tripped,
)
from proxy.parity.gate import GateResult, gate
from proxy.parity.settings import CanarySettings, ParitySettings, check_blocks

SETTINGS = msgspec.convert(
    {
        "candidate": "ft35",
        "min_pairs": 50,
        "guardrails": {"error_rate": 0.02, "latency_p95_ms": 2000, "cost_usd": "0.002", "min_requests": 20},
        "holdout": 0.05,
    },
    CanarySettings,
)
HEALTHY = GuardrailReadings(requests=100, error_rate=0.0, latency_p95_ms=800.0, cost_usd=Decimal("0.001"))
PASSING = gate(100, 100, margin=0.95)
FAILING = gate(80, 100, margin=0.95)
UNDECIDED = gate(10, 10, margin=0.95)


def run(
    state: CanaryState, result: GateResult = PASSING, pairs: int = 100, readings: GuardrailReadings = HEALTHY
) -> Transition:
    return step(state, SETTINGS, result, pairs, readings)


def test_a_passing_candidate_climbs_every_step_to_complete():
    state = initial(SETTINGS)
    shares = [state.share]
    while state.status is not Status.COMPLETE:
        moved = run(state)
        assert moved.event is not None
        assert moved.event.action is Action.ADVANCE
        assert moved.event.gate is PASSING
        assert moved.state.version == state.version + 1
        state = moved.state
        shares.append(state.share)
    assert shares == [1, 5, 25, 50, 100]
    assert state.passed == (1, 5, 25, 50)
    assert candidate_share(state, SETTINGS) == 0.95  # the holdout stays with the reference
    assert candidate_share(initial(SETTINGS), SETTINGS) == 0.01
    assert run(state).event is None  # complete: it stays


def test_no_step_without_enough_pairs_a_pass_and_enough_requests():
    state = initial(SETTINGS)
    assert run(state, pairs=49).event is None
    assert run(state, UNDECIDED).event is None
    assert run(state, readings=GuardrailReadings(requests=19)).event is None
    assert run(state, pairs=50).state.share == 5


def test_a_failing_gate_rolls_back_to_the_last_safe_step_at_once():
    state = run(run(initial(SETTINGS)).state).state  # at 25, 1 and 5 passed
    assert (state.share, state.safe) == (25, 5)
    moved = run(state, FAILING, pairs=3)
    assert moved.event is not None
    assert (moved.event.action, moved.event.from_share, moved.event.to_share) == (Action.ROLLBACK, 25, 5)
    assert f"to {FAILING.upper:.4f}, margin 0.95" in moved.event.reason
    assert (moved.state.share, moved.state.status) == (5, Status.ROLLED_BACK)
    assert run(moved.state).event is None  # rolled back: no climbing again until a team resumes
    again = run(moved.state, FAILING)  # failing at the safe share too: that one is not safe either
    assert (again.state.share, again.state.passed) == (1, (1,))
    out = run(run(again.state, FAILING).state, FAILING)
    assert (out.state.share, out.state.passed, out.event) == (0, (), None)


def test_guardrails_roll_back_even_while_the_gate_passes():
    for readings, which in [
        (GuardrailReadings(requests=100, error_rate=0.2), "error rate"),
        (GuardrailReadings(requests=100, latency_p95_ms=2500.0), "latency p95"),
        (GuardrailReadings(requests=100, cost_usd=Decimal("0.003")), "cost usd"),
    ]:
        moved = run(initial(SETTINGS), PASSING, readings=readings)
        assert moved.event is not None
        assert moved.event.action is Action.ROLLBACK
        assert which in moved.event.reason
        assert moved.event.guardrails is readings
        assert moved.state.share == 0  # nothing had passed yet
    assert tripped(GuardrailReadings(requests=5, error_rate=1.0), SETTINGS) is None  # too few to say
    assert tripped(HEALTHY, SETTINGS) is None


def test_pause_holds_but_still_rolls_back():
    state = command(initial(SETTINGS), SETTINGS, Action.PAUSE, who="ops").state
    assert state.status is Status.PAUSED
    assert run(state).event is None
    assert run(state, FAILING).state.status is Status.ROLLED_BACK
    resumed = command(state, SETTINGS, Action.RESUME)
    assert resumed.state.status is Status.RUNNING
    assert run(resumed.state).state.share == 5


def test_pin_overrides_everything_until_resume_or_reset():
    pinned = command(initial(SETTINGS), SETTINGS, Action.PIN, share=50, who="ops")
    assert pinned.event is not None
    assert pinned.event.reason == "pinned at 50% by ops"
    state = pinned.state
    assert (state.share, state.status) == (50, Status.PINNED)
    assert run(state, FAILING, readings=GuardrailReadings(requests=100, error_rate=0.5)).event is None
    assert command(state, SETTINGS, Action.PAUSE).event is None
    resumed = command(state, SETTINGS, Action.RESUME).state
    assert (resumed.share, resumed.status) == (50, Status.RUNNING)
    assert run(resumed).state.share == 100
    with pytest.raises(ValueError, match="0 to 100"):
        command(state, SETTINGS, Action.PIN, share=101)


def test_reset_starts_over_and_resume_after_a_full_rollback_restarts_at_the_first_step():
    state = run(run(initial(SETTINGS)).state, FAILING).state
    reset = command(state, SETTINGS, Action.RESET).state
    assert (reset.share, reset.passed, reset.status) == (1, (), Status.RUNNING)
    assert reset.version > state.version
    out = run(initial(SETTINGS), FAILING).state
    assert (out.share, out.status) == (0, Status.ROLLED_BACK)
    assert command(out, SETTINGS, Action.RESUME).state.share == 1
    assert command(initial(SETTINGS), SETTINGS, Action.RESUME).event is None  # running already
    with pytest.raises(ValueError, match="command"):
        command(out, SETTINGS, Action.ADVANCE)


def test_a_rollback_from_complete_goes_to_the_step_before():
    state = initial(SETTINGS)
    for _ in range(4):
        state = run(state).state
    moved = run(state, readings=GuardrailReadings(requests=100, error_rate=0.5))
    assert (moved.state.share, moved.state.status) == (50, Status.ROLLED_BACK)


def test_the_blocks_are_validated():
    parity = msgspec.convert({"reference": "gpt4", "evaluators": ["normalised"]}, ParitySettings)
    check_blocks(parity, SETTINGS, frozenset({"gpt4", "ft35"}))
    with pytest.raises(ValueError, match="no route is named 'ft35'"):
        check_blocks(parity, SETTINGS, frozenset({"gpt4"}))
    with pytest.raises(ValueError, match="needs a parity block"):
        check_blocks(None, SETTINGS, frozenset({"gpt4", "ft35"}))
    with pytest.raises(ValueError, match="reference itself"):
        check_blocks(parity, msgspec.convert({"candidate": "gpt4"}, CanarySettings), frozenset({"gpt4"}))
    judged = msgspec.convert({"reference": "gpt4", "judge": {"route": "judge"}}, ParitySettings)
    with pytest.raises(ValueError, match=r"parity\.judge\.route"):
        check_blocks(judged, None, frozenset({"gpt4"}))


@pytest.mark.parametrize(
    ("block", "kind", "message"),
    [
        ({"reference": "gpt4"}, ParitySettings, "at least one evaluator or a judge"),
        ({"reference": "gpt4", "evaluators": ["json", {"kind": "json"}]}, ParitySettings, "named twice"),
        ({"reference": "gpt4", "evaluators": ["fuzzy"]}, ParitySettings, "Invalid enum value 'fuzzy'"),
        ({"reference": "gpt4", "evaluators": [{"kind": "semantic", "threshold": 1.5}]}, ParitySettings, "<= 1"),
        ({"reference": "gpt4", "evaluators": ["exact"], "margin": 1}, ParitySettings, "< 1"),
        ({"reference": "gpt4", "evaluators": ["exact"], "sample": 0}, ParitySettings, "> 0"),
        ({"reference": "gpt4", "evaluators": ["exact"], "colour": 1}, ParitySettings, "unknown field"),
        ({"candidate": "x", "steps": [5, 1]}, CanarySettings, "must increase"),
        ({"candidate": "x", "steps": []}, CanarySettings, "at least one step"),
        ({"candidate": "x", "steps": [0, 50]}, CanarySettings, ">= 1"),
        ({"candidate": "x", "holdout": 1}, CanarySettings, "< 1"),
        ({"candidate": "x", "guardrails": {"cost_usd": "abc"}}, CanarySettings, "not a decimal"),
        ({"candidate": "x", "guardrails": {"cost_usd": "-1"}}, CanarySettings, "positive"),
    ],
)
def test_bad_blocks_are_refused_with_a_reason(block, kind, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(block, kind)


def test_the_shorthand_names_stand_for_the_kinds_with_their_defaults():
    parity = msgspec.convert(
        {"reference": "gpt4", "evaluators": ["normalised", {"kind": "semantic", "threshold": 0.8}]}, ParitySettings
    )
    assert [type(spec).__name__ for spec in parity.specs()] == ["NormalisedSpec", "SemanticSpec"]
    assert parity.specs()[1].threshold == 0.8  # type: ignore[union-attr]
    assert SETTINGS.steps == [1, 5, 25, 50, 100]


def test_the_readme_sketch_is_valid():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Parity and canary") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match is not None
    blocks = yaml.safe_load(match.group(1))
    parity = msgspec.convert(blocks["parity"], ParitySettings)
    canary = msgspec.convert(blocks["canary"], CanarySettings)
    check_blocks(parity, canary, frozenset({"frontier", "support-ft"}))
    assert (parity.margin, canary.steps, canary.holdout) == (0.95, [1, 5, 25, 50, 100], 0.05)
