"""What each kind of test is, by the folder it lives in, and the guard that keeps unit tests off networks and processes.

`tests/conftest.py` marks every test with its kind (`unit`, `integration`, `e2e`, `clients`, `deploy`, `fuzz`; the
contract tests are `contract` and `integration`: they run against Redis; the third-party clients' tests are `clients`
and `e2e`) and runs the setup and the body of each unit test
inside `guarded()`: there, opening a connection, binding a port or starting a process raises `NotAUnitTestError`
at once, naming what was tried and where such a test belongs. A violation that the code under test catches and
swallows still fails the test afterwards (`Guard.check()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

TESTS = Path(__file__).resolve().parent
KINDS: dict[str, tuple[str, ...]] = {
    "unit": ("unit",),
    "contract": ("contract", "integration"),
    "integration": ("integration",),
    "e2e": ("e2e",),
    "clients": ("clients", "e2e"),
    "deploy": ("deploy",),
    "fuzz": ("fuzz",),
}
"""The markers of the tests in each folder under tests/."""
ELSEWHERE = (
    "move it to tests/integration (the app in-process, Redis, the simulated upstream on loopback), "
    "tests/e2e (real processes) or tests/deploy (the image, the chart, Helm's SDK)"
)


def kinds(path: Path) -> tuple[str, ...]:
    """The markers of the test in `path`, from the folder under tests/ it lives in."""
    folder = path.resolve().relative_to(TESTS).parts[0]
    if folder not in KINDS:
        raise pytest.UsageError(f"{path}: a test lives in one of tests/{{{','.join(KINDS)}}}/")
    return KINDS[folder]


class NotAUnitTestError(AssertionError):
    """A unit test opened a connection, bound a port or started a process."""


@dataclass
class Guard:
    """One unit test's violations, kept so that one the code swallowed still fails the test."""

    test: str
    violations: list[str] = field(default_factory=list)

    def refuse(self, what: str) -> NoReturn:
        """Record `what` was tried and raise."""
        self.violations.append(what)
        raise NotAUnitTestError(f"{self.test} tried {what}: a unit test needs no network and no process; {ELSEWHERE}")

    def check(self) -> None:
        """Raise if anything was tried, even when the code under test caught the error."""
        if self.violations:
            tried = "; ".join(self.violations)
            raise NotAUnitTestError(
                f"{self.test} tried {tried}: a unit test needs no network and no process; {ELSEWHERE}"
            )


@contextlib.contextmanager
def guarded(guard: Guard) -> Iterator[None]:
    """Within: every connection, bind and process start goes to `guard.refuse()`."""

    def refusing(what: str, argument: int | None = None) -> Callable[..., Any]:
        def refuse(*args: Any, **_: Any) -> NoReturn:
            shown = f" {args[argument]!r:.120}" if argument is not None and len(args) > argument else ""
            guard.refuse(what + shown)

        return refuse

    with pytest.MonkeyPatch.context() as patch:
        for method in ("connect", "connect_ex", "bind"):
            patch.setattr(socket.socket, method, refusing(f"socket.{method}", 1))
        patch.setattr(subprocess.Popen, "_execute_child", refusing("subprocess.Popen", 1))
        for name in ("system", "posix_spawn", "posix_spawnp", "fork"):
            patch.setattr(os, name, refusing(f"os.{name}", 0))
        for name in ("create_subprocess_exec", "create_subprocess_shell"):
            patch.setattr(asyncio, name, refusing(f"asyncio.{name}", 0))
            patch.setattr(asyncio.subprocess, name, refusing(f"asyncio.{name}", 0))
        yield
