"""The canary's state machine: the candidate route's share of a rule's traffic, moved by the gate and guardrails.

Pure: a state and the latest readings in, the next state and the event that moved it (None: it stays) out;
where the state is kept, and which pairs and requests a reading counts, is the caller's. `version` grows by
one with every change, so a store shared by replicas can compare-and-set it, and the caller can count the
pairs and requests of the current step (those since the version began).

- `running`: once the current step has `min_pairs` pairs, the gate passes and the guardrails hold (with
  enough requests to say so), the share moves to the next step; the step it leaves becomes the last safe
  one. Reaching the last step: `complete`, which keeps watching.
- a gate `fail` or a guardrail over its limit, in `running`, `paused` or `complete`: back at once to the last
  safe share (0 before any step passed), `rolled_back`. In `rolled_back`, a new trip at the safe share takes
  that share off the safe list too, and drops to the one before it.
- `paused` (a team's command): holds its share, but rolls back like `running`. `resume` goes on.
- `pinned` (a team's command, at a share it names): nothing automatic, neither forward nor back, until
  `resume` or `reset`: the team overrides the gate and owns the choice.
- `reset`: the first step, nothing passed, running.

The share a request sees is `candidate_share`: the state's share, but never above `1 - holdout`, so the
reference keeps answering a holdout to measure against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from proxy.parity.gate import GateResult, GateVerdict
from proxy.parity.settings import CanarySettings

__all__ = [
    "Action",
    "CanaryState",
    "Event",
    "GuardrailReadings",
    "Status",
    "Transition",
    "candidate_share",
    "command",
    "initial",
    "step",
    "tripped",
]


class Status(StrEnum):
    """Where a canary stands."""

    RUNNING = "running"
    PAUSED = "paused"
    PINNED = "pinned"
    ROLLED_BACK = "rolled_back"
    COMPLETE = "complete"


class Action(StrEnum):
    """What moved a canary (every event is logged with its evidence)."""

    ADVANCE = "advance"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    PIN = "pin"
    RESUME = "resume"
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class CanaryState:
    """A canary: its share (percent), the shares that passed (the last is the safe one), its status."""

    share: int
    passed: tuple[int, ...] = ()
    status: Status = Status.RUNNING
    version: int = 0

    @property
    def safe(self) -> int:
        """The share to roll back to: the last that passed, 0 before any did."""
        return self.passed[-1] if self.passed else 0


@dataclass(frozen=True, slots=True)
class GuardrailReadings:
    """The candidate's own requests at the current step: how many, and how they went (None: not measured)."""

    requests: int
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    cost_usd: Decimal | None = None
    """The mean cost of one request."""


@dataclass(frozen=True, slots=True)
class Event:
    """One move of a canary and its evidence."""

    action: Action
    from_share: int
    to_share: int
    reason: str
    gate: GateResult | None = None
    guardrails: GuardrailReadings | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The state after a reading or a command, and the event that changed it (None: nothing changed)."""

    state: CanaryState
    event: Event | None = None


def initial(settings: CanarySettings) -> CanaryState:
    """A new canary: the first step, nothing passed."""
    return CanaryState(share=settings.steps[0])


def candidate_share(state: CanaryState, settings: CanarySettings) -> float:
    """The share of the rule's traffic the candidate answers now (0 to 1, the holdout kept for the reference)."""
    return min(state.share / 100, 1 - settings.holdout)


def tripped(readings: GuardrailReadings, settings: CanarySettings) -> str | None:
    """The first guardrail over its limit, as a reason (None: all hold, or too few requests to say)."""
    limits = settings.guardrails
    if readings.requests < limits.min_requests:
        return None
    checks = (
        ("error rate", readings.error_rate, limits.error_rate),
        ("latency p95 ms", readings.latency_p95_ms, limits.latency_p95_ms),
        ("cost usd", readings.cost_usd, limits.cost),
    )
    for name, reading, limit in checks:
        if reading is not None and limit is not None and reading > limit:
            return f"{name} {reading} over {limit} on {readings.requests} requests"
    return None


def _figures(gate: GateResult) -> str:
    """The gate's evidence, as an event's reason gives it."""
    figures = f"{gate.successes} of {gate.pairs} pairs ({gate.test} test"
    if gate.test == "sequential":
        evidence = gate.evidence_pass if gate.verdict is GateVerdict.PASS else gate.evidence_fail
        figures += f", likelihood ratio {evidence:.3g} >= {1 / (1 - gate.confidence):.3g}"
    return figures + f"), one-sided Wilson bounds {gate.lower:.4f} to {gate.upper:.4f}, margin {gate.margin}"


def _move(state: CanaryState, event: Event, **changes: object) -> Transition:
    return Transition(replace(state, version=state.version + 1, **changes), event)  # type: ignore[arg-type]


def _rollback(state: CanaryState, reason: str, gate: GateResult | None, readings: GuardrailReadings) -> Transition:
    passed = state.passed
    if state.status is Status.ROLLED_BACK and passed and state.share == passed[-1]:
        passed = passed[:-1]  # the safe share failed too: it is no longer safe
    elif state.status is Status.ROLLED_BACK and state.share == 0:
        return Transition(state)
    target = passed[-1] if passed else 0
    event = Event(Action.ROLLBACK, state.share, target, reason, gate, readings)
    return _move(state, event, share=target, passed=passed, status=Status.ROLLED_BACK)


def step(
    state: CanaryState, settings: CanarySettings, gate: GateResult, step_pairs: int, readings: GuardrailReadings
) -> Transition:
    """The canary after the latest gate result and guardrail readings for its current step."""
    if state.status is Status.PINNED:
        return Transition(state)
    trip = tripped(readings, settings)
    if trip is not None:
        return _rollback(state, f"guardrail: {trip}", gate, readings)
    if gate.verdict is GateVerdict.FAIL:
        reason = f"gate failed: {_figures(gate)}"
        return _rollback(state, reason, gate, readings)
    if state.status is not Status.RUNNING or gate.verdict is not GateVerdict.PASS:
        return Transition(state)
    if step_pairs < settings.min_pairs or readings.requests < settings.guardrails.min_requests:
        return Transition(state)
    later = [share for share in settings.steps if share > state.share]
    if not later:
        return Transition(state)
    target = later[0]
    status = Status.COMPLETE if target == settings.steps[-1] else Status.RUNNING
    reason = f"gate passed: {_figures(gate)}"
    passed = state.passed if state.share in state.passed else (*state.passed, state.share)
    return _move(
        state,
        Event(Action.ADVANCE, state.share, target, reason, gate, readings),
        share=target,
        passed=passed,
        status=status,
    )


def command(
    state: CanaryState, settings: CanarySettings, action: Action, *, share: int | None = None, who: str = ""
) -> Transition:
    """A team's command: `pause`, `pin` (at `share`, else the current one), `resume` or `reset`.

    Raises:
        ValueError: an automatic action, or a share outside 0 to 100.
    """
    by = f" by {who}" if who else ""
    if action is Action.PAUSE:
        if state.status in (Status.PAUSED, Status.PINNED):
            return Transition(state)
        return _move(state, Event(action, state.share, state.share, f"paused{by}"), status=Status.PAUSED)
    if action is Action.PIN:
        target = state.share if share is None else share
        if not 0 <= target <= 100:
            raise ValueError(f"a canary is pinned at 0 to 100 percent, not {target}")
        return _move(
            state, Event(action, state.share, target, f"pinned at {target}%{by}"), share=target, status=Status.PINNED
        )
    if action is Action.RESUME:
        if state.status not in (Status.PAUSED, Status.PINNED, Status.ROLLED_BACK):
            return Transition(state)
        target = settings.steps[0] if state.share == 0 else state.share
        status = Status.COMPLETE if target >= settings.steps[-1] else Status.RUNNING
        return _move(state, Event(action, state.share, target, f"resumed{by}"), share=target, status=status)
    if action is Action.RESET:
        event = Event(action, state.share, settings.steps[0], f"reset{by}")
        return _move(state, event, share=settings.steps[0], passed=(), status=Status.RUNNING)
    raise ValueError(f"{action} is not a team's command")
