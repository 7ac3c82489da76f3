"""Process lifecycle: graceful drain on SIGTERM, and `serve` with no upstream configured."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    clean_env,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_env,
)

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def draining_turnout(simulator: RunningProcess) -> Iterator[RunningProcess]:
    """A Turnout of its own (it gets SIGTERM), forwarding to the shared simulator, with a 5 s drain."""
    env = turnout_env(simulator, TURNOUT_DRAIN_TIMEOUT="5", TURNOUT_UPSTREAM_READ_TIMEOUT="10")
    with running(start_turnout(env)) as process:
        yield process


@pytest.fixture
def simulated_turnout() -> Iterator[RunningProcess]:
    """A Turnout started with no OpenAI or Turnout settings at all."""
    process = start_turnout(clean_env())
    yield process
    process.close()


def test_sigterm_drains_in_flight_requests(draining_turnout: RunningProcess, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    headers = {"x-request-id": request_id, "x-simulated-latency-ms": "1500"}

    with sdk_client(draining_turnout.origin) as client, ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(
            client.chat.completions.with_raw_response.create, model=MODEL, messages=MESSAGES, extra_headers=headers
        )
        # In flight once the upstream has it (rather than after a fixed sleep); it answers 1.5 s later.
        assert simulator_call.wait_for(request_id, lambda call: call["outcome"] == "started") is not None
        draining_turnout.signal(signal.SIGTERM)
        signalled_at = time.monotonic()

        response = in_flight.result(timeout=10)
        exit_code = draining_turnout.wait(timeout=10)
        exited_after = time.monotonic() - signalled_at

    assert response.http_response.status_code == 200
    assert response.parse().choices[0].message.content
    assert simulator_call(request_id)["outcome"] == "completed"
    assert exit_code == 0, draining_turnout.stderr()
    assert exited_after < 4.0


def test_serve_without_settings_uses_the_simulated_upstream(simulated_turnout: RunningProcess) -> None:
    first_line = simulated_turnout.stderr().splitlines()[0]
    assert "built-in simulated upstream" in first_line

    with sdk_client(simulated_turnout.origin) as client:
        completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert completion.choices[0].message.content


def test_serve_refuses_to_start_on_a_broken_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("upstreams:\n  openai: {}\nroutes:\n  a: {upstream: openai}\nrules:\n  - name: x\n    route: b\n")
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "proxy", "serve", "--config", str(policy), "--port", "0"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f"{policy}:7: rule 'x': unknown route 'b'" in result.stderr
