"""Normal traffic's latency with and without 2,000 silent and slow connections held, in one run.

`python -m tests.bench.slow_clients [--rounds R] [--seconds S] [--silent N] [--slow-heads N] [--slow-bodies N]`
starts the simulated upstream (zero latency) and Turnout (one worker, its default connection limits
unless `--serve-args` says otherwise), then alternates, for R rounds:

- quiet: wrk at concurrency 1 and 16 against `POST /v1/chat/completions`, nothing else connected;
- held: the same while a thread keeps N silent connections, N headers sent a byte a second and N chat
  bodies trickled a byte a second open. Each one that the server closes is opened again at once, so
  the count stays held for the whole run (the issue's attack: 2,000 / 200 / 50).

It prints the medians of the rounds' p50 and p99 for both, their ratio (held / quiet, same run), the
requests/s, and how many slow connections the server closed and with what. Loopback only; at most
`(2 * rounds * 2 + 2) * seconds` seconds of measurement. The process raises its own open-file limit
to what it needs (up to the hard limit) and stops when it cannot.

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import resource
import statistics
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

from tests.bench.__main__ import CHAT_BODY, PATH, find_wrk, free_port, run_wrk, started
from tests.rawhttp import hold_silent, hold_slow_body, hold_slow_head

HOLD_GUARD = 600.0
"""A slow connection the server keeps longer than this is dropped by the client (it never should be)."""


@dataclass
class Holder:
    """Keeps slow connections open in a thread of its own until stopped; counts how each one ended."""

    port: int
    counts: dict[str, int]
    ended: collections.Counter[str] = field(default_factory=collections.Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Holder:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)
        self._thread.start()
        self._ready.wait(60)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    async def _hold(self) -> None:
        kinds: dict[str, Callable[[], Awaitable[bytes]]] = {
            "silent": lambda: hold_silent(self.port, guard=HOLD_GUARD),
            "slow head": lambda: hold_slow_head(self.port, guard=HOLD_GUARD),
            "slow body": lambda: hold_slow_body(self.port, guard=HOLD_GUARD),
        }
        stop = asyncio.Event()
        tasks = [
            asyncio.get_running_loop().create_task(self._again(kind, kinds[kind], stop))
            for kind, count in self.counts.items()
            for _ in range(count)
        ]
        await asyncio.sleep(1.5)  # they connect
        self._ready.set()
        await asyncio.to_thread(self._stop.wait)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _again(self, kind: str, hold: Callable[[], Awaitable[bytes]], stop: asyncio.Event) -> None:
        await asyncio.sleep(random.random())  # spread over a second, so that their deadlines are spread too
        while not stop.is_set():
            try:
                raw = await hold()
            except OSError as exc:  # refused or reset: counted, and tried again a little later
                self.ended[f"{kind}: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            status = raw.split(b" ", 2)[1].decode() if raw.startswith(b"HTTP/1.1 ") else "closed, no response"
            self.ended[f"{kind}: {status}"] += 1


@dataclass
class Figures:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)


def open_files(needed: int) -> None:
    """Raise this process's soft open-file limit to `needed` (it holds every slow connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"the benchmark needs {needed} open files; the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def measure(wrk: str, url: str, seconds: int, figures: dict[str, Figures], phase: str) -> None:
    for connections in (1, 16):
        result = run_wrk(wrk, url, CHAT_BODY, connections, seconds)
        row = figures.setdefault(f"{phase} c{connections}", Figures())
        row.p50.append(result.p50_ms)
        row.p99.append(result.p99_ms)
        row.rps.append(result.rps)


def report(figures: dict[str, Figures], ended: collections.Counter[str]) -> None:
    print(f"\n{'median of rounds':24}{'p50 ms':>10}{'p99 ms':>10}{'requests/s':>12}")
    for name, row in figures.items():
        p50, p99, rps = (statistics.median(values) for values in (row.p50, row.p99, row.rps))
        print(f"{name:24}{p50:10.3f}{p99:10.3f}{rps:12.0f}")
    for connections in (1, 16):
        quiet, held = figures[f"quiet c{connections}"], figures[f"held c{connections}"]
        ratios = [
            statistics.median(getattr(held, name)) / statistics.median(getattr(quiet, name))
            for name in ("p50", "p99", "rps")
        ]
        print(f"held / quiet at c{connections}: p50 {ratios[0]:.2f}, p99 {ratios[1]:.2f}, requests/s {ratios[2]:.2f}")
    print("\nslow connections ended by the server (each opened again at once):")
    for what, count in sorted(ended.items()):
        print(f"  {what:40}{count:8}")


@contextlib.contextmanager
def servers(upstream: int, turnout: int, serve_args: list[str]) -> Iterator[None]:
    python = sys.executable
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "TURNOUT_LOG_LEVEL": "warning",
        "TURNOUT_ACCESS_LOG": "false",
    }
    with ExitStack() as stack:
        stack.enter_context(started([python, "-m", "proxy", "simulate", "--port", str(upstream)], upstream))
        serve = [python, "-m", "proxy", "serve", "--port", str(turnout), "--workers", "1", *serve_args]
        stack.enter_context(started(serve, turnout, env))
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--silent", type=int, default=2000, help="connections that never send a byte")
    parser.add_argument("--slow-heads", type=int, default=200, help="headers at a byte a second")
    parser.add_argument("--slow-bodies", type=int, default=50, help="chat bodies at a byte a second")
    parser.add_argument("--serve-args", default="", help="more `turnout serve` flags, e.g. '--header-timeout 5'")
    args = parser.parse_args()
    counts = {"silent": args.silent, "slow head": args.slow_heads, "slow body": args.slow_bodies}
    open_files(sum(counts.values()) + 256)
    wrk = find_wrk()
    upstream, turnout = free_port(), free_port()
    url = f"http://127.0.0.1:{turnout}{PATH}"
    figures: dict[str, Figures] = {}
    ended: collections.Counter[str] = collections.Counter()
    with servers(upstream, turnout, args.serve_args.split()):
        run_wrk(wrk, url, CHAT_BODY, 16, 2)  # warm the pools
        print(f"cores: {os.cpu_count()}; rounds: {args.rounds}; wrk runs of {args.seconds} s; held: {counts}")
        for round_number in range(1, args.rounds + 1):
            measure(wrk, url, args.seconds, figures, "quiet")
            with Holder(turnout, counts) as holder:
                measure(wrk, url, args.seconds, figures, "held")
            ended += holder.ended
            print(f"round {round_number} of {args.rounds} done", file=sys.stderr)
    report(figures, ended)


if __name__ == "__main__":
    main()
