"""End-to-end fixtures: the real `turnout serve` and `turnout simulate` as subprocesses on loopback ports.

Turnout is driven with the official `openai` SDK, strict response validation on and retries off, so
every test shows what a real client sees. The simulated upstream records each call by `x-request-id`;
`simulator_call()` reads that record back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import openai
import pytest

SERVER_KEY = "sk-e2e-secret-do-not-leak-0123456789"
"""The upstream key Turnout is configured with; it must never reach a client or a log."""
CLIENT_KEY = "sk-e2e-client-key-9876543210"
"""The key the SDK sends to Turnout; it must never reach the upstream."""
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any OpenAI or Turnout setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TURNOUT_"))}
    env.update(extra)
    return env


@dataclass
class RunningProcess:
    """A subprocess started by the tests, with its stderr captured in a temporary file."""

    name: str
    process: subprocess.Popen[bytes]
    stderr_file: IO[bytes]
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        """Everything the process has written to stderr so far."""
        return Path(self.stderr_file.name).read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, path: str, timeout: float = START_TIMEOUT) -> None:
        """Poll `GET path` until it answers 200; fail with the process's stderr if it dies or never does."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    log = self.stderr()
                    self.close()
                    pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{log}")
                try:
                    if http.get(self.origin + path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        log = self.stderr()
        self.close()
        pytest.fail(f"{self.name} did not answer {path} within {timeout} s:\n{log}")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit code."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Terminate the process, killing it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        """Stop the process and delete its captured stderr."""
        self.stop()
        self.stderr_file.close()


def turnout_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a `turnout` command (`python -m proxy ARGS`) to its end, its output captured."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_process(name: str, args: list[str], env: Mapping[str, str], port: int) -> RunningProcess:
    """Start `python -m proxy ARGS` with `env`, its stderr going to a temporary file (deleted on close)."""
    stderr_file = tempfile.NamedTemporaryFile(prefix=f"turnout-e2e-{name}-", suffix=".log")  # noqa: SIM115
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr_file,
    )
    return RunningProcess(name=name, process=process, stderr_file=stderr_file, port=port)


def start_simulator() -> RunningProcess:
    port = free_port()
    simulator = start_process("simulator", ["simulate", "--port", str(port)], clean_env(), port)
    simulator.wait_ready("/v1/models")
    return simulator


def start_turnout(env: Mapping[str, str]) -> RunningProcess:
    """Start `python -m proxy serve` on a free port with `env` and wait until `/healthz` answers.

    Idle connections close at once on SIGTERM (`TURNOUT_SHUTDOWN_LINGER` 0, unless `env` says otherwise): every
    stop would otherwise wait out the linger (a second and a half a server, 2 minutes in all), which only the
    rolling-upgrade test is about.
    """
    port = free_port()
    env = {"TURNOUT_SHUTDOWN_LINGER": "0", **env}
    server = start_process("turnout", ["serve", "--port", str(port)], env, port)
    server.wait_ready("/healthz")
    return server


def turnout_env(simulator: RunningProcess, **overrides: str) -> dict[str, str]:
    """The environment of a Turnout that forwards to `simulator` with `SERVER_KEY`.

    The upstream read timeout is 1 s, so that the simulator's `timeout` fault turns into a 504 quickly.
    """
    settings = {
        "OPENAI_BASE_URL": f"{simulator.origin}/v1",
        "OPENAI_API_KEY": SERVER_KEY,
        "TURNOUT_UPSTREAM_READ_TIMEOUT": "1",
    }
    return clean_env(**{**settings, **overrides})


def assert_no_secret(process: RunningProcess) -> None:
    log = process.stderr()
    assert SERVER_KEY not in log, f"{process.name}'s stderr contains the upstream key:\n{log}"


@contextlib.contextmanager
def running(process: RunningProcess) -> Iterator[RunningProcess]:
    """Use `process`, then stop it and check that its log never showed the upstream key."""
    try:
        yield process
        process.stop()
        assert_no_secret(process)
    finally:
        process.close()


@pytest.fixture(scope="session")
def simulator() -> Iterator[RunningProcess]:
    """`python -m proxy simulate` on a free loopback port."""
    with running(start_simulator()) as process:
        yield process


@pytest.fixture(scope="session")
def turnout(simulator: RunningProcess) -> Iterator[RunningProcess]:
    """`python -m proxy serve` on a free loopback port, forwarding to the simulator with `SERVER_KEY`."""
    with running(start_turnout(turnout_env(simulator))) as process:
        yield process


def sdk_client(origin: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=CLIENT_KEY,
        base_url=f"{origin}/v1",
        max_retries=0,
        timeout=20.0,
        _strict_response_validation=True,
    )


@pytest.fixture(scope="session")
def client(turnout: RunningProcess) -> Iterator[openai.OpenAI]:
    """The official SDK pointed at Turnout."""
    with sdk_client(turnout.origin) as sdk:
        yield sdk


@pytest.fixture
async def async_client(turnout: RunningProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official async SDK pointed at Turnout (per test: its connections belong to the test's loop)."""
    async with openai.AsyncOpenAI(
        api_key=CLIENT_KEY,
        base_url=f"{turnout.origin}/v1",
        max_retries=0,
        timeout=20.0,
        _strict_response_validation=True,
    ) as sdk:
        yield sdk


@pytest.fixture(scope="session")
def http(turnout: RunningProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client for Turnout, for requests the SDK would not send."""
    with httpx.Client(base_url=turnout.origin, timeout=20.0) as plain:
        yield plain


def new_request_id() -> str:
    return f"e2e-{uuid.uuid4().hex}"


class SimulatorCalls:
    """Reads the simulator's records of the calls it received, by `x-request-id`."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The record of that call (headers, raw, body, outcome, cancelled_at), or None if it never arrived."""
        response = httpx.get(f"{self.origin}/_simulator/calls/{request_id}", timeout=5.0)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        record: dict[str, Any] = response.json()
        return record

    def __call__(self, request_id: str) -> dict[str, Any]:
        """The record of that call; fails the test if the simulator never received it."""
        record = self.find(request_id)
        assert record is not None, f"the simulator received no call {request_id}"
        return record

    def wait_for(
        self, request_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any] | None:
        """Poll the record until `until(record)` holds or `timeout` passes; return the last record seen."""
        deadline = time.monotonic() + timeout
        record = self.find(request_id)
        while (record is None or not until(record)) and time.monotonic() < deadline:
            time.sleep(0.02)
            record = self.find(request_id)
        return record


@pytest.fixture(scope="session")
def simulator_call(simulator: RunningProcess) -> SimulatorCalls:
    """`simulator_call(request_id)`: the simulator's record of that call (what it received, how it ended)."""
    return SimulatorCalls(simulator.origin)


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
