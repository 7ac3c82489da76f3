"""The traffic log under load with a store that does not keep up (issue 16): drops counted, no request held up.

A real server with a tiny queue (`queue: 5`, `batch: 1`) writes to an SQLite file whose write lock the test holds:
the writer waits on the lock, the queue fills, and what no longer fits is dropped and counted. Every request is
answered meanwhile. Once the lock is let go, the writer catches up, and what the metrics say was written is what
the file holds: written + dropped = every request.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from proxy.traffic.log import FLUSH_EVERY
from tests.e2e.conftest import CLIENT_KEY, RunningProcess, running, start_turnout, turnout_env

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  small: {upstream: sim, model: gpt-4o-mini}
traffic:
  enabled: true
  store: sqlite:///${TRAFFIC_DB}
  log: content
  queue: 5
  batch: 1
rules:
  - {name: default, route: small}
"""
REQUESTS = 80


@pytest.fixture(scope="module")
def server(
    simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningProcess, Path]]:
    directory = Path(tmp_path_factory.mktemp("overflow"))
    (directory / "policy.yaml").write_text(POLICY, encoding="utf-8")
    database = directory / "traffic.db"
    env = turnout_env(
        simulator,
        TURNOUT_CONFIG=str(directory / "policy.yaml"),
        SIM_URL=f"{simulator.origin}/v1",
        TRAFFIC_DB=str(database),
        TURNOUT_DATA_DIR=str(directory / "data"),
    )
    with running(start_turnout(env)) as process:
        yield process, database


def metric(origin: str, name: str) -> float:
    for line in httpx.get(f"{origin}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def reported_drops(origin: str, within: float = 5.0) -> float:
    """The drops once the writer has published them: it does so every `FLUSH_EVERY` seconds, not per request."""
    deadline = time.monotonic() + within
    while True:
        drops = metric(origin, 'turnout_traffic_dropped_total{reason="full"}')
        if drops > 0 or time.monotonic() > deadline:
            return drops
        time.sleep(FLUSH_EVERY / 2)


async def ask_all(origin: str) -> list[str]:
    client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=f"{origin}/v1", max_retries=0, timeout=20)
    try:
        answers = await asyncio.gather(
            *(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}])
              for i in range(REQUESTS))
        )  # fmt: skip
    finally:
        await client.close()
    return [answer.choices[0].message.content or "" for answer in answers]


def test_a_stuck_store_drops_and_counts_but_holds_no_request_up(server: tuple[RunningProcess, Path]) -> None:
    process, database = server
    origin = process.origin
    lock = sqlite3.connect(database, isolation_level=None, timeout=10)
    lock.execute("BEGIN IMMEDIATE")  # the store's writer now waits for this lock
    try:
        answers = asyncio.run(ask_all(origin))
        assert len(answers) == REQUESTS
        assert all(answers)  # every one answered while the log could not write
        assert httpx.get(f"{origin}/healthz", timeout=5).status_code == 200
        assert reported_drops(origin) > 0
        assert metric(origin, "turnout_traffic_queue_depth") <= 5
        assert metric(origin, "turnout_traffic_written_total") == 0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    deadline = time.monotonic() + 20
    while True:
        written = metric(origin, "turnout_traffic_written_total")
        full = metric(origin, 'turnout_traffic_dropped_total{reason="full"}')
        failed = metric(origin, 'turnout_traffic_dropped_total{reason="error"}')
        if written + full + failed >= REQUESTS or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert written + full + failed == REQUESTS
    assert written >= 1
    with sqlite3.connect(database) as reader:
        rows = reader.execute("SELECT COUNT(*) FROM turnout_traffic").fetchone()[0]
    assert rows == written
