"""The simulated life cycle of a long-running object (a fine-tuning job, a batch): its status from elapsed time.

An object moves through its stages, each lasting one *step*, to its final status; nothing runs in the
background: whoever looks at the object (retrieve, list, events) computes where it is now from the
clock. The step is `DEFAULT_STEP_MS` (fast, so that a test sees a job finish within a second or two),
or what the creating request's `x-simulated-step-ms` header says (0 to 600,000: 0 makes it final at once;
set it high to watch a demo job run). The clock is the app's `CLOCK`, the wall clock plus an offset that
a test moves on (`SimulatorClock.advance`) to see each stage without waiting for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from routes.simulator.limits import wait_ms

__all__ = ["CLOCK", "DEFAULT_STEP_MS", "Lifecycle", "SimulatorClock", "now", "step_seconds"]

DEFAULT_STEP_MS = 300.0


@dataclass(slots=True)
class SimulatorClock:
    """The wall clock, plus what a test moved it on by."""

    offset: float = 0.0

    def now(self) -> float:
        """Seconds since the epoch, moved on by `offset`."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock on (a test's way to see the next stage at once)."""
        self.offset += seconds


CLOCK = web.AppKey[SimulatorClock]("clock")


def now(app: web.Application) -> float:
    """The simulator's clock, in seconds since the epoch."""
    return app[CLOCK].now() if CLOCK in app else time.time()


def step_seconds(headers: Mapping[str, str]) -> float:
    """How long each stage lasts for an object created with these headers (`x-simulated-step-ms`)."""
    return wait_ms(headers, "x-simulated-step-ms", DEFAULT_STEP_MS) / 1000


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Stages, one step each, then a final status."""

    stages: tuple[str, ...]
    final: str

    def status(self, started: float, step: float, at: float) -> str:
        """The status at time `at` of an object whose first stage began at `started`."""
        reached = self.reached(started, step, at)
        return self.stages[reached] if reached < len(self.stages) else self.final

    def reached(self, started: float, step: float, at: float) -> int:
        """How many stages are over at time `at` (`len(stages)`: the final status is reached)."""
        if step <= 0:
            return len(self.stages)
        return min(len(self.stages), max(0, int((at - started) / step)))

    def entered(self, started: float, step: float, index: int) -> int:
        """When stage `index` (`len(stages)`: the final status) began, in whole seconds."""
        return int(started + step * index)
