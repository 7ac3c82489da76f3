"""`Canaries`: each rule's canary as every replica shares it (the database), its guardrails, and its moves.

The state lives in the database's `turnout_canary` table (`proxy.auth.pairs`), read through a cache of
`ttl` seconds, so a replica sees another's change within that. `review` (after each pair and each candidate
request) runs the gate on the rule's pairs since its evidence began, reads the guardrails of the current
step, and moves the state by `proxy.parity.canary.step`; the write is a compare-and-set on the version, so
of two processes that read the same version only one moves it (the other re-reads and reviews again).
Every move is one log line with its evidence, and a metric.

The guardrails read the candidate's own requests at the current step (served or paired) as this process saw
them: each replica watches its own share of the traffic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from policies import Experiment
from proxy.accounting.parity import ParityMetrics
from proxy.auth.pairs import CanaryRow, PairStore
from proxy.parity.canary import (
    Action,
    CanaryState,
    Event,
    GuardrailReadings,
    Status,
    Transition,
    candidate_share,
    command,
    initial,
    step,
)
from proxy.parity.gate import GateResult, gate

__all__ = ["Canaries", "Evidence", "Standing"]

logger = logging.getLogger("turnout.canary")
LATENCIES = 10_000
"""The latest latencies of a step the p95 is read from (a bounded window, whatever the traffic)."""
_SUCCESSES = ("win", "tie")
_DIRECTIONS = {Action.ADVANCE: "up", Action.RESUME: "up", Action.ROLLBACK: "down"}


@dataclass(frozen=True, slots=True)
class Standing:
    """A canary's state as read, and the version its evidence starts at."""

    state: CanaryState
    since_version: int = 0
    read_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """The gate on a rule's pairs, and how many of them were made at the canary's current step."""

    gate: GateResult
    step_pairs: int
    undecided: int
    judged: int = 0
    """Pairs a deterministic evaluator decided that the judge decided too (its audit)."""
    judge_agrees: int = 0
    """Of those, the pairs where both agree on what the gate counts (the candidate at least as good, or not)."""


@dataclass(slots=True)
class _Window:
    """The candidate's requests at one canary version, as this process saw them."""

    version: int
    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES))
    cost: Decimal = Decimal(0)
    priced: int = 0

    def readings(self) -> GuardrailReadings:
        if not self.requests:
            return GuardrailReadings(requests=0)
        ordered = sorted(self.latencies)
        p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else None
        mean_cost = self.cost / self.priced if self.priced else None
        return GuardrailReadings(self.requests, self.errors / self.requests, p95, mean_cost)


def _row(rule: str, candidate: str, state: CanaryState, since_version: int) -> CanaryRow:
    now = datetime.now(UTC)
    return CanaryRow(rule, candidate, state.share, state.passed, state.status, state.version, since_version, now)


def _standing(row: CanaryRow, read_at: float) -> Standing:
    state = CanaryState(row.share, row.passed, Status(row.status), row.version)
    return Standing(state, row.since_version, read_at)


class Canaries:
    """The canaries of a policy's rules, kept in `store`."""

    def __init__(
        self,
        experiments: Mapping[str, Experiment],
        store: PairStore,
        *,
        metrics: ParityMetrics | None = None,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.experiments = {rule: e for rule, e in experiments.items() if e.canary is not None}
        self._store, self._metrics, self._ttl, self._clock = store, metrics, ttl, clock
        self._read: dict[str, Standing] = {}
        self._windows: dict[str, _Window] = {}
        self._verdicts: dict[str, str] = {}
        self._locks = {rule: asyncio.Lock() for rule in self.experiments}
        self._again: set[str] = set()

    def _experiment(self, rule: str) -> Experiment:
        experiment = self.experiments.get(rule)
        if experiment is None or experiment.canary is None:
            raise KeyError(f"rule {rule!r} has no canary")
        return experiment

    async def standing(self, rule: str, *, fresh: bool = False) -> Standing:
        """The rule's canary as of at most `ttl` seconds ago (`fresh`: from the store now); created when missing."""
        cached = self._read.get(rule)
        now = self._clock()
        if cached is not None and not fresh and now - cached.read_at < self._ttl:
            return cached
        experiment = self._experiment(rule)
        settings = experiment.canary
        assert settings is not None  # noqa: S101 - `_experiment` checked it
        row = await self._store.canary(rule)
        if row is None:
            await self._store.put_canary(_row(rule, experiment.candidate, initial(settings), 0), None)
            row = await self._store.canary(rule)
            assert row is not None  # noqa: S101 - created just now, by this process or another
        standing = _standing(row, now)
        self._read[rule] = standing
        if self._metrics is not None:
            self._metrics.canary_share(rule, candidate_share(standing.state, settings))
        return standing

    def share(self, rule: str, standing: Standing) -> float:
        """The candidate's share of the rule's traffic in `standing` (after the holdout)."""
        settings = self._experiment(rule).canary
        assert settings is not None  # noqa: S101
        return candidate_share(standing.state, settings)

    def verdict(self, rule: str) -> str:
        """The gate's verdict at this process's last review of the rule."""
        return self._verdicts.get(rule, "undecided")

    def observe(self, rule: str, version: int, *, failed: bool, latency_ms: float, cost: Decimal | None) -> None:
        """One request the candidate answered (or failed) while the canary was at `version`."""
        window = self._windows.get(rule)
        if window is None or window.version < version:
            window = self._windows[rule] = _Window(version)
        elif window.version > version:
            return  # a request of an earlier step: it says nothing of this one
        window.requests += 1
        window.errors += failed
        if not failed:
            window.latencies.append(latency_ms)
        if cost is not None:
            window.cost += cost
            window.priced += 1

    async def evidence(self, experiment: Experiment, standing: Standing | None) -> Evidence:
        """The gate on the rule's pairs since its evidence began, and the pairs of the current step."""
        since = standing.since_version if standing is not None else 0
        counts = await self._store.pair_counts(experiment.rule, experiment.candidate, since)
        decided = [count for count in counts if count.outcome != "undecided"]
        successes = sum(count.pairs for count in decided if count.outcome in _SUCCESSES)
        pairs = sum(count.pairs for count in decided)
        current = standing.state.version if standing is not None else None
        parity = experiment.parity
        result = gate(
            successes,
            pairs,
            margin=parity.margin,
            confidence=parity.confidence,
            test=parity.test,
            min_pairs=parity.min_pairs,
        )
        step_pairs = sum(count.pairs for count in decided if count.canary_version == current)
        undecided = sum(count.pairs for count in counts if count.outcome == "undecided")
        audited = [
            count for count in decided if count.evaluator != "judge" and count.judge_outcome not in (None, "undecided")
        ]
        agrees = sum(c.pairs for c in audited if (c.outcome in _SUCCESSES) == (c.judge_outcome in _SUCCESSES))
        if self._metrics is not None:
            self._metrics.gated(experiment.rule, experiment.candidate, result.verdict, result.rate, result.lower)
        return Evidence(result, step_pairs, undecided, sum(count.pairs for count in audited), agrees)

    async def review(self, rule: str) -> Event | None:
        """Move the rule's canary if its gate and guardrails say so; the event (None: it stays).

        Reviews of one rule in this process coalesce: one asked while another runs makes that one run once
        more when it is done (instead of queueing one per request), and returns None at once.
        """
        lock = self._locks[rule]
        if lock.locked():
            self._again.add(rule)
            return None
        async with lock:
            while True:
                self._again.discard(rule)
                event = await self._review(rule)
                if event is not None or rule not in self._again:
                    return event

    async def _review(self, rule: str) -> Event | None:
        experiment = self._experiment(rule)
        settings = experiment.canary
        assert settings is not None  # noqa: S101
        for _ in range(3):  # a lost compare-and-set: read again and review the new state
            standing = await self.standing(rule, fresh=True)
            evidence = await self.evidence(experiment, standing)
            self._verdicts[rule] = evidence.gate.verdict
            window = self._windows.get(rule)
            current = window is not None and window.version == standing.state.version
            readings = window.readings() if window is not None and current else GuardrailReadings(requests=0)
            moved = step(standing.state, settings, evidence.gate, evidence.step_pairs, readings)
            if moved.event is None:
                return None
            if await self._write(experiment, standing, moved, evidence):
                return moved.event
        return None

    async def command(self, rule: str, action: Action, *, share: int | None = None, who: str = "") -> Event | None:
        """A team's command (pause, pin, resume, reset), written by compare-and-set; the event (None: no change).

        Raises:
            ValueError: a share outside 0 to 100, or an automatic action.
        """
        experiment = self._experiment(rule)
        settings = experiment.canary
        assert settings is not None  # noqa: S101
        for _ in range(5):
            standing = await self.standing(rule, fresh=True)
            moved = command(standing.state, settings, action, share=share, who=who)
            if moved.event is None:
                return None
            if await self._write(experiment, standing, moved, await self.evidence(experiment, standing)):
                return moved.event
        raise RuntimeError(f"the canary of rule {rule!r} kept changing under the command: try again")

    async def _write(self, experiment: Experiment, standing: Standing, moved: Transition, evidence: Evidence) -> bool:
        event = moved.event
        assert event is not None  # noqa: S101 - only moves are written
        fresh_evidence = event.action is Action.RESET or (
            event.action is Action.RESUME and standing.state.status is Status.ROLLED_BACK
        )
        since = moved.state.version if fresh_evidence else standing.since_version
        row = _row(experiment.rule, experiment.candidate, moved.state, since)
        if not await self._store.put_canary(row, standing.state.version):
            return False
        self._read[experiment.rule] = Standing(moved.state, since, self._clock())
        self._log(experiment, event, evidence)
        if self._metrics is not None:
            self._metrics.stepped(experiment.rule, _DIRECTIONS.get(event.action, "set"))
            settings = experiment.canary
            assert settings is not None  # noqa: S101
            self._metrics.canary_share(experiment.rule, candidate_share(moved.state, settings))
        return True

    def _log(self, experiment: Experiment, event: Event, evidence: Evidence) -> None:
        result = evidence.gate
        figures = {
            "rule": experiment.rule,
            "candidate": experiment.candidate,
            "action": str(event.action),
            "from_share": event.from_share,
            "to_share": event.to_share,
            "pairs": result.pairs,
            "successes": result.successes,
            "step_pairs": evidence.step_pairs,
            "rate": None if result.rate is None else round(result.rate, 4),
            "lower_bound": round(result.lower, 4),
            "upper_bound": round(result.upper, 4),
            "margin": result.margin,
            "verdict": str(result.verdict),
        }
        if event.guardrails is not None:
            figures["guardrail_requests"] = event.guardrails.requests
            figures["error_rate"] = event.guardrails.error_rate
            figures["latency_p95_ms"] = event.guardrails.latency_p95_ms
        logger.info("canary %s: %s", json.dumps(figures), event.reason)

    def forget(self, rule: str) -> None:
        """Drop the cached state (a test, or a command from elsewhere that must show at once)."""
        self._read.pop(rule, None)
        self._windows.pop(rule, None)

    def cached(self, rule: str) -> Standing | None:
        """The last state read, if any (for the response header when the store is slow)."""
        return self._read.get(rule)
