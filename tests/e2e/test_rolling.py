"""A rolling upgrade loses nothing: two `turnout serve` behind a switch, one drained with SIGTERM under load.

The switch is the test's own TCP proxy, as a Service is: each new connection goes to the backend it points
at then, and stays there. The upgrade is what Kubernetes does with the chart's `preStop`: new connections
move to the other replica first, then the old one gets SIGTERM and drains. Meanwhile clients keep sending
streamed and non-streamed requests, over kept-alive connections, with the SDK's own retries off, and every
one of them must succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import signal
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.e2e.conftest import (
    CLIENT_KEY,
    RunningProcess,
    SimulatorCalls,
    free_port,
    new_request_id,
    running,
    start_turnout,
    turnout_env,
)

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
CLIENTS = 8
DRAIN = "10"


class Switch:
    """A TCP proxy on a loopback port: each new connection is piped to the backend port chosen at the time."""

    def __init__(self, backend: int) -> None:
        self.port = free_port()
        self.backend = backend
        self.connections: Counter[int] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="switch", daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Future[Any]] = set()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def move_to(self, backend: int) -> None:
        """New connections go to `backend` from now on; open ones stay where they are."""
        self.backend = backend

    def __enter__(self) -> Switch:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(5)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self._ready.set()
        await self._stopped.wait()
        server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend = self.backend
        self.connections[backend] += 1
        self._writers.add(client_writer)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            client_writer.close()
            return
        self._writers.add(writer)
        pipes = asyncio.gather(self._pipe(client_reader, writer), self._pipe(reader, client_writer))
        self._pipes.add(pipes)
        await pipes

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                sink.close()


@pytest.fixture
def replicas(simulator: RunningProcess) -> Iterator[tuple[RunningProcess, RunningProcess]]:
    """Two Turnouts of their own (one gets SIGTERM), forwarding to the shared simulator."""
    env = turnout_env(
        simulator, TURNOUT_DRAIN_TIMEOUT=DRAIN, TURNOUT_UPSTREAM_READ_TIMEOUT="10", TURNOUT_SHUTDOWN_LINGER="1"
    )
    with running(start_turnout(env)) as old, running(start_turnout(env)) as new:
        yield old, new


class Load:
    """`CLIENTS` threads, each with its own SDK client (kept-alive connections, no retries), until stopped."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.stop = threading.Event()
        self.done: Counter[str] = Counter()
        self.failures: list[str] = []
        self.signalled = threading.Event()
        self.straddled = 0
        """Requests that began before the old replica got SIGTERM and ended after it (in flight on it)."""
        self._lock = threading.Lock()

    def client(self, number: int) -> None:
        with openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{self.origin}/v1", max_retries=0, timeout=30) as sdk:
            turn = 0
            while not self.stop.is_set():
                kind = ("stream", "complete", "quick")[(turn + number) % 3]
                turn += 1
                request_id = new_request_id()
                before = not self.signalled.is_set()
                try:
                    self._one(sdk, kind, request_id)
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    with self._lock:
                        self.failures.append(f"{kind} {request_id}: {type(exc).__name__}: {exc}")
                else:
                    with self._lock:
                        self.done[kind] += 1
                        self.straddled += before and self.signalled.is_set()

    def _one(self, sdk: openai.OpenAI, kind: str, request_id: str) -> None:
        headers = {"x-request-id": request_id}
        if kind == "stream":
            headers |= {"x-simulated-chunk-interval-ms": "40", "x-simulated-chunks": "10"}
            with sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=headers) as s:
                chunks = list(s)
            assert chunks, "an empty stream"
            assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop", chunks[-1]
        else:  # a quick one keeps its connection idle more of the time, between the client's requests
            if kind == "complete":
                headers |= {"x-simulated-latency-ms": "150"}
            completion = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=headers)
            assert completion.choices[0].message.content


def test_a_drained_replica_loses_no_request(
    replicas: tuple[RunningProcess, RunningProcess], simulator_call: SimulatorCalls
) -> None:
    old, new = replicas
    with Switch(old.port) as switch, ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        load = Load(switch.origin)
        clients = [pool.submit(load.client, number) for number in range(CLIENTS)]
        _wait_until(lambda: sum(load.done.values()) >= 2 * CLIENTS)  # every client has a kept-alive connection
        switch.move_to(new.port)  # the preStop: the replica leaves the Service's endpoints...
        old.signal(signal.SIGTERM)  # ... then it is told to stop, with streams and requests in flight on it
        load.signalled.set()
        exit_code = old.wait(timeout=float(DRAIN) + 10)
        before = sum(load.done.values())
        _wait_until(lambda: sum(load.done.values()) >= before + 2 * CLIENTS)  # and the new one carries on
        load.stop.set()
        for client in clients:
            client.result(timeout=30)

    assert exit_code == 0, old.stderr()
    assert load.failures == []
    assert min(load.done[kind] for kind in ("stream", "complete", "quick")) > 0
    assert load.straddled > 0  # some were in flight on the old replica when it was told to stop
    assert switch.connections[old.port] >= CLIENTS
    assert switch.connections[new.port] >= 1  # the clients reconnected, to the new replica


def _wait_until(condition: Any, timeout: float = 30.0) -> None:
    finished = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        finished.wait(0.05)
    pytest.fail("the load did not get that far")


@pytest.fixture
def stopping(simulator: RunningProcess) -> Iterator[RunningProcess]:
    """A Turnout of its own, to be sent SIGTERM."""
    with running(
        start_turnout(turnout_env(simulator, TURNOUT_DRAIN_TIMEOUT=DRAIN, TURNOUT_SHUTDOWN_LINGER="1"))
    ) as process:
        yield process


def test_a_request_on_a_kept_alive_connection_just_after_sigterm_is_answered(stopping: RunningProcess) -> None:
    """What uvicorn alone loses: it closes idle connections at once, the request already sent on one included."""
    connection = http.client.HTTPConnection("127.0.0.1", stopping.port, timeout=10)
    try:
        connection.request("GET", "/v1/models")
        first = connection.getresponse()
        first.read()
        assert (first.status, first.getheader("connection")) == (200, None)  # kept alive
        stopping.signal(signal.SIGTERM)
        _wait_until(lambda: not _accepts(stopping.port))  # the server has begun to stop: it takes no new connection
        connection.request("GET", "/v1/models")  # the next request on the open one, as a pooled client sends it
        second = connection.getresponse()
        assert second.read()
        assert (second.status, second.getheader("connection")) == (200, "close")
    finally:
        connection.close()
    assert stopping.wait(timeout=float(DRAIN) + 10) == 0, stopping.stderr()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
