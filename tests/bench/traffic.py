"""What the traffic log costs: `python -m tests.bench.traffic [--rounds R] [--seconds S]` (part of `make bench`).

Two measurements, printed side by side with their ratios:

1. Turnout with one worker, the same policy file twice, against the simulated upstream (zero latency): the log
   off, and the log on with content (`traffic: {enabled: true, log: content}`, into an SQLite file). wrk measures
   non-streaming chat requests/s at concurrency 64, alternating for R rounds; printed are the medians and
   on / off (the target: at least 0.90), and what the log wrote and dropped meanwhile (from `/metrics`).
2. The writer alone: N finished chat requests (content kept, half of them streamed) queued at once, then
   read, redacted and written into a fresh SQLite file in batches by the real `TrafficLog`: exchanges/s
   sustained (the target: at least 1,000), and the same for reading them only and for the store's inserts only.

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from proxy.accounting.tally import Tally
from proxy.config.sections import TrafficSettings
from proxy.endpoints.chat import CHAT
from proxy.traffic.capture import Pending, exchange_of
from proxy.traffic.log import TrafficLog
from proxy.traffic.redact import Redaction
from proxy.traffic.sqlite import SqliteTrafficStore
from tests.bench.__main__ import CHAT_BODY, PATH, find_wrk, free_port, run_wrk, started, wait_until_listening

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: sk-bench-not-a-real-key}
routes:
  small: {upstream: sim, model: gpt-4o-mini}
  gpt4: {upstream: sim, model: gpt-4}
baseline: gpt4
%s
rules:
  - {name: tools, when: {has_tools: true}, route: gpt4}
  - {name: default, route: small}
"""
TRAFFIC_ON = "traffic: {enabled: true, log: content, store: 'sqlite:///%s'}"


@contextmanager
def serving(command: list[str], port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`started`, with the process at hand (its CPU time is read)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        wait_until_listening(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (all its threads) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rows(database: Path) -> tuple[int, int]:
    """Rows in the SQLite log and how many have content ((0, 0) when the log went elsewhere: `--traffic`)."""
    if not database.exists():
        return 0, 0
    with sqlite3.connect(database) as reader:
        rows, with_content = reader.execute("SELECT COUNT(*), COUNT(answer) FROM turnout_traffic").fetchone()
    return int(rows), int(with_content)


def _metric(origin: str, name: str) -> float:
    for line in httpx.get(f"{origin}/metrics", timeout=10).text.splitlines():
        if line.startswith(name):
            return float(line.split()[-1])
    return 0.0


def measure_throughput(rounds: int, seconds: int, directory: Path, traffic: str = TRAFFIC_ON) -> None:
    wrk, python = find_wrk(), sys.executable
    upstream, off, on = free_port(), free_port(), free_port()
    database = directory / "traffic.db"
    (directory / "off.yaml").write_text(POLICY % "", encoding="utf-8")
    (directory / "on.yaml").write_text(POLICY % (traffic % database), encoding="utf-8")
    base = {**os.environ, "SIM_URL": f"http://127.0.0.1:{upstream}/v1", "TURNOUT_LOG_LEVEL": "warning"}
    base["TURNOUT_DATA_DIR"] = str(directory / "data")
    serve = [python, "-m", "proxy", "serve", "--workers", "1", "--port"]
    targets = {"log off": off, "log on": on}
    rates: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    with ExitStack() as stack:
        stack.enter_context(started([python, "-m", "proxy", "simulate", "--port", str(upstream)], upstream))
        pids = {
            name: stack.enter_context(
                serving([*serve, str(port)], port, {**base, "TURNOUT_CONFIG": str(directory / f"{name[4:]}.yaml")})
            ).pid
            for name, port in targets.items()
        }
        for port in targets.values():  # warm the pools
            run_wrk(wrk, f"http://127.0.0.1:{port}{PATH}", CHAT_BODY, 64, 2)
        print(f"cores: {os.cpu_count()}; rounds: {rounds}; wrk runs of {seconds} s, non-streaming chat at c64")
        for round_number in range(1, rounds + 1):
            order = list(targets.items()) if round_number % 2 else list(reversed(targets.items()))
            for name, port in order:  # each first every other round: a drift in the machine's load hits both
                before = cpu_seconds(pids[name])
                rate = run_wrk(wrk, f"http://127.0.0.1:{port}{PATH}", CHAT_BODY, 64, seconds).rps
                time.sleep(0.5)  # the writer's batches of this run
                rates[name].append(rate)
                cpu[name].append((cpu_seconds(pids[name]) - before) / (rate * seconds) * 1e6)
            print(f"round {round_number} of {rounds} done", file=sys.stderr)
        time.sleep(1.0)  # the writer's last batch
        origin = f"http://127.0.0.1:{on}"
        written = _metric(origin, "turnout_traffic_written_total")
        dropped = _metric(origin, 'turnout_traffic_dropped_total{reason="full"}')
        failed = _metric(origin, 'turnout_traffic_dropped_total{reason="error"}')
    rows, with_content = _rows(database)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\n{'median of rounds':34}" + "".join(f"{name:>12}" for name in targets) + f"{'on/off':>10}")
    print(
        f"{'requests/s at c64':34}"
        + "".join(f"{medians[name]:12.1f}" for name in targets)
        + f"{medians['log on'] / medians['log off']:10.3f}"
    )
    paired = [on / off for off, on in zip(rates["log off"], rates["log on"], strict=True)]
    print("each round (off, on): " + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(*rates.values(), strict=True)))
    print(f"median of the rounds' own on/off ratios: {statistics.median(paired):.3f}")
    per = {name: statistics.median(values) for name, values in cpu.items()}
    print(
        f"the server's CPU time per request (all threads, the writer's included): {per['log off']:.0f} us off, "
        f"{per['log on']:.0f} us on: off/on {per['log off'] / per['log on']:.3f} (what a CPU-bound worker keeps)"
    )
    print(
        f"the log wrote {written:.0f} exchanges ({rows} rows, {with_content} with content), "
        f"dropped {dropped:.0f} for a full queue and {failed:.0f} for store errors"
    )


ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A simulated answer of a few words, " * 4},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 48, "total_tokens": 88},
    }
).encode()
REQUEST = json.dumps(
    {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are the support desk of Acme. Be brief."},
            {"role": "user", "content": "My order 4411 has not arrived; mail me at jane@example.com. " * 3},
        ],
    }
).encode()


def _stream() -> list[bytes]:
    chunks = []
    for word in ["A", " simulated", " answer", " of", " a", " few", " words"] * 3:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
        chunk["choices"] = [{"index": 0, "delta": {"content": word}, "finish_reason": None}]
        chunks.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    return [*chunks, b"data: [DONE]\n\n"]


def _tallies(count: int) -> list[Tally]:
    body, stream = CHAT.decode(REQUEST), _stream()
    tallies = []
    for index in range(count):
        streamed = index % 2 == 1
        tally = Tally(request_id=f"bench-{index}", routed=True, endpoint="chat", stream=streamed, request=body)
        tally.status, tally.route, tally.rule, tally.ended_at = 200, "small", "default", tally.started + 0.01
        if streamed:
            tally.sent = list(stream)
        else:
            tally.answer, tally.sent = ANSWER, [ANSWER]
        tallies.append(tally)
    return tallies


async def _writer(count: int, directory: Path) -> tuple[float, float, float]:
    settings = TrafficSettings(enabled=True, log="content", queue=count + 1)
    tallies = _tallies(count)
    redaction = Redaction(settings.redact)
    start = time.perf_counter()
    exchanges = [exchange_of(Pending(t, PATH, time.time(), True), redaction) for t in tallies]
    read_rate = count / (time.perf_counter() - start)
    store = SqliteTrafficStore(directory / "inserts.db")
    await store.open()
    start = time.perf_counter()
    for offset in range(0, count, settings.batch):
        await store.write(exchanges[offset : offset + settings.batch])
    insert_rate = count / (time.perf_counter() - start)
    await store.close()
    log = TrafficLog(SqliteTrafficStore(directory / "writer.db"), settings)
    await log.store.open()
    for tally in tallies:
        log.record(tally, "POST", PATH)
    start = time.perf_counter()
    log.start()
    await log.flush(within=600)
    sustained = count / (time.perf_counter() - start)
    await log.close()
    return sustained, read_rate, insert_rate


def measure_writer(count: int, directory: Path) -> None:
    sustained, read_rate, insert_rate = asyncio.run(_writer(count, directory))
    with sqlite3.connect(directory / "writer.db") as reader:
        rows = reader.execute("SELECT COUNT(*) FROM turnout_traffic").fetchone()[0]
    print(f"\nthe writer alone, {count} chat exchanges with content (half streamed), into SQLite in batches of 500:")
    print(f"  sustained (read, redact, encode, insert): {sustained:10.0f} exchanges/s ({rows} rows written)")
    print(f"  reading and redacting only:               {read_rate:10.0f} exchanges/s")
    print(f"  the store's inserts only:                 {insert_rate:10.0f} exchanges/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--exchanges", type=int, default=20_000, help="exchanges for the writer alone")
    parser.add_argument("--writer-only", action="store_true", help="measure the writer alone")
    parser.add_argument("--traffic", default=TRAFFIC_ON, help="the `traffic` block of the log-on policy (%%s: store)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turnout-bench-traffic-") as directory:
        if not args.writer_only:
            measure_throughput(args.rounds, args.seconds, Path(directory), args.traffic)
        measure_writer(args.exchanges, Path(directory))


if __name__ == "__main__":
    main()
