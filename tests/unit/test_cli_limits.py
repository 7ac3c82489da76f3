"""`turnout serve` raises its soft open-file limit to what `max_connections` needs, or says why it cannot."""

from __future__ import annotations

import logging
import resource

import pytest

from proxy.cli import main as cli
from proxy.config.settings import load_settings

HARD = 1 << 20


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[int, int]]:
    """The process's RLIMIT_NOFILE, faked: `getrlimit` reads it, `setrlimit` writes it (within the hard limit)."""
    state = {"nofile": (1024, HARD)}

    def setrlimit(kind: int, value: tuple[int, int]) -> None:
        assert kind == resource.RLIMIT_NOFILE
        if value[0] > state["nofile"][1]:
            raise ValueError("not allowed to raise maximum limit")
        state["nofile"] = value

    monkeypatch.setattr(resource, "getrlimit", lambda kind: state["nofile"])
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return state


def test_the_soft_limit_is_raised_to_what_the_connections_need(limits: dict[str, tuple[int, int]]) -> None:
    cli._raise_open_file_limit(load_settings({"TURNOUT_MAX_CONNECTIONS": "5000"}))
    assert limits["nofile"] == (5000 + 1000 + 256, HARD)  # the cap, the upstream pool, a margin


def test_a_high_enough_limit_is_left_alone(limits: dict[str, tuple[int, int]]) -> None:
    limits["nofile"] = (HARD, HARD)
    cli._raise_open_file_limit(load_settings({}))
    assert limits["nofile"] == (HARD, HARD)


def test_a_hard_limit_below_the_need_is_a_warning(
    limits: dict[str, tuple[int, int]], caplog: pytest.LogCaptureFixture
) -> None:
    limits["nofile"] = (1024, 4096)
    with caplog.at_level(logging.WARNING, logger="turnout"):
        cli._raise_open_file_limit(load_settings({}))
    assert limits["nofile"] == (4096, 4096)
    assert "the open-file limit is 4096, below the 11256 that max_connections (10000)" in caplog.text
