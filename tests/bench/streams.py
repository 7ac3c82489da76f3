"""1,000 open streams of realistic timing on one worker, side by side: direct, the bare pass-through, Turnout.

`python -m tests.bench.streams [--streams N] [--rounds R] [--no-tracing]` starts the simulated upstream with the
timing of a real model (first token after 300 ms, then 20 chunks a second, 100 chunks), the bare pass-through
(`tests.bench.reference`), Turnout (one worker) and, unless `--no-tracing`, a second Turnout exporting every span
over OTLP/HTTP to a receiver of its own process (`tests.otlp_receiver`). In each round, for each target in turn, a
client opens N streams (their starts spread over one second, so that all N are open together for four seconds) on
raw sockets and times each stream's first event and the rest. Printed, as medians of the rounds:

- time to the first event, p50 and p99, and what each target adds to direct's;
- the delay per chunk: a stream's span from its first event to its last over its gaps, and what is added;
- CPU per relayed event: the relaying process's user+system time over the round / the events the client received;
- memory per open stream: (the process's peak RSS while the streams are open - its RSS before) / N, first round
  only (later rounds reuse what the first allocated; the peak is sampled every 50 ms).

The targets from the issue: added TTFB p99 at most 50 ms, at most 30 KB per open stream, and CPU per event no more
than the bare pass-through's. The machine's cores are shared: read the same-run ratios, not the absolute figures.
Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import uvloop

from tests.bench.__main__ import PATH, STREAM_BODY, free_port, wait_until_listening
from tests.bench.slow_clients import open_files

FIRST_TOKEN_MS, INTERVAL_MS, CHUNKS = 300, 50, 100
SPREAD = 1.0
"""Seconds over which a round's stream starts are spread."""
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Stream:
    ttfb: float
    events: int
    per_chunk: float
    """(last event - first event) / (events - 1), seconds."""


@dataclass
class Figures:
    ttfb_p50: list[float] = field(default_factory=list)
    ttfb_p99: list[float] = field(default_factory=list)
    chunk_p50: list[float] = field(default_factory=list)
    chunk_p99: list[float] = field(default_factory=list)
    cpu_per_event: list[float] = field(default_factory=list)
    kb_per_stream: list[float] = field(default_factory=list)
    failed: int = 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread until stopped; keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, _rss_kb(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_kb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def _one(port: int, start_at: float, request: bytes) -> Stream | None:
    await asyncio.sleep(start_at)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    sent = time.perf_counter()
    writer.write(request)
    first = last = 0.0
    events, tail, head = 0, b"", b""
    try:
        while data := await reader.read(65536):
            now = time.perf_counter()
            if not head:  # the status line: only a 200 counts
                head = data[:12]
            seen = (tail + data).count(b"data:") - tail.count(b"data:")
            tail = data[-4:]
            if seen:
                first = first or now
                last, events = now, events + seen
    except OSError:
        return None
    finally:
        writer.close()
    if not head.startswith(b"HTTP/1.1 200") or events < 2:
        return None
    return Stream(ttfb=first - sent, events=events, per_chunk=(last - first) / (events - 1))


async def _round(port: int, streams: int) -> list[Stream | None]:
    body = STREAM_BODY.encode()
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    return await asyncio.gather(*(_one(port, SPREAD * i / streams, request) for i in range(streams)))


def run_streams(port: int, streams: int) -> list[Stream | None]:
    """N streams on `port`, each on its own connection, in this thread's own (uvloop) event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_round(port, streams))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(port: int, pid: int, streams: int, figures: Figures, *, memory: bool) -> None:
    before_rss, before_cpu = _rss_kb(pid), _cpu_seconds(pid)
    with PeakRss(pid) as rss:
        results = run_streams(port, streams)
    cpu = _cpu_seconds(pid) - before_cpu
    done = [stream for stream in results if stream is not None]
    figures.failed += len(results) - len(done)
    if not done:
        raise SystemExit(f"no stream on port {port} completed")
    figures.ttfb_p50.append(_percentile([s.ttfb for s in done], 0.5) * 1000)
    figures.ttfb_p99.append(_percentile([s.ttfb for s in done], 0.99) * 1000)
    figures.chunk_p50.append(_percentile([s.per_chunk for s in done], 0.5) * 1000)
    figures.chunk_p99.append(_percentile([s.per_chunk for s in done], 0.99) * 1000)
    figures.cpu_per_event.append(cpu / sum(s.events for s in done) * 1e6)
    if memory:
        figures.kb_per_stream.append((rss.peak - before_rss) / streams)


@contextmanager
def started(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run `command` until the block ends; yields its pid once `port` listens."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        wait_until_listening(port, process)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def report(results: dict[str, Figures], streams: int) -> None:
    def median(name: str, what: str) -> float:
        values = getattr(results[name], what)
        return statistics.median(values) if values else float("nan")

    names = list(results)
    print(f"\n{streams} streams; medians of rounds{'':14}" + "".join(f"{name:>16}" for name in names))
    rows = [
        ("time to first event p50 (ms)", "ttfb_p50"),
        ("time to first event p99 (ms)", "ttfb_p99"),
        ("delay per chunk p50 (ms)", "chunk_p50"),
        ("delay per chunk p99 (ms)", "chunk_p99"),
        ("CPU per relayed event (us)", "cpu_per_event"),
        ("memory per open stream (KB)", "kb_per_stream"),
    ]
    for label, what in rows:
        print(f"{label:46}" + "".join(f"{median(name, what):16.2f}" for name in names))
    print(f"{'failed streams (all rounds)':46}" + "".join(f"{results[name].failed:16d}" for name in names))
    print(f"\n{'added to direct':46}" + "".join(f"{name:>16}" for name in names[1:]))
    for label, what in rows[:4]:
        print(f"{label:46}" + "".join(f"{median(n, what) - median('direct', what):16.2f}" for n in names[1:]))
    bare = median("reference", "cpu_per_event")
    for name in names[2:]:
        print(f"{name}: CPU per event {median(name, 'cpu_per_event') / bare:.2f} x the bare pass-through's (same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are reported")
    parser.add_argument("--no-tracing", action="store_true", help="skip the Turnout that exports spans")
    parser.add_argument("--chunks", type=int, default=CHUNKS, help="content chunks a stream")
    args = parser.parse_args()
    open_files(4 * args.streams + 256)  # the servers inherit it: each holds its clients' and its upstream's
    python = sys.executable
    upstream, reference, turnout, traced, receiver = (free_port() for _ in range(5))
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "TURNOUT_LOG_LEVEL": "warning",
        "TURNOUT_ACCESS_LOG": "false",
    }
    timing = [
        "--latency-ms",
        str(FIRST_TOKEN_MS),
        "--chunk-interval-ms",
        str(INTERVAL_MS),
        "--chunks",
        str(args.chunks),
    ]
    serve = [python, "-m", "proxy", "serve", "--workers", "1", "--port"]
    with ExitStack() as stack:
        pids = {
            "direct": stack.enter_context(
                started([python, "-m", "proxy", "simulate", "--port", str(upstream), *timing], upstream)
            ),
            "reference": stack.enter_context(
                started([python, "-m", "tests.bench.reference", str(reference), str(upstream)], reference)
            ),
            "turnout": stack.enter_context(started([*serve, str(turnout)], turnout, env)),
        }
        ports = {"direct": upstream, "reference": reference, "turnout": turnout}
        if not args.no_tracing:
            stack.enter_context(started([python, "-m", "tests.otlp_receiver", str(receiver)], receiver))
            traced_env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver}"}
            pids["traced"], ports["traced"] = (
                stack.enter_context(started([*serve, str(traced)], traced, traced_env)),
                traced,
            )
        for port in ports.values():  # warm the pools, the imports and the allocator a little
            run_streams(port, 20)
        print(
            f"cores: {os.cpu_count()}; {args.streams} streams a round, {args.rounds} rounds; {args.chunks} chunks, "
            f"first after {FIRST_TOKEN_MS} ms, then every {INTERVAL_MS} ms"
        )
        results = {name: Figures() for name in ports}
        for round_number in range(1, args.rounds + 1):
            for name, port in ports.items():
                measure(port, pids[name], args.streams, results[name], memory=round_number == 1)
            print(f"round {round_number} of {args.rounds} done", file=sys.stderr)
    report(results, args.streams)


if __name__ == "__main__":
    main()
