"""A 100 MB download through Turnout's pass-through, and straight from the same upstream, in one run.

`python -m tests.bench.transfer [--megabytes N] [--rounds R]` starts an aiohttp upstream in a process of
its own (`tests.passthrough_upstream`, serving `GET /v1/files/{id}/content?bytes=N`) and Turnout (one
worker, no policy) in front of it, then downloads the file R times each way, alternating, with a raw-socket
client that adds almost nothing, and prints the median rates and their ratio (issue 13 asks for at least
80% of the direct rate). `measure_transfer()` returns them, for `make bench`.

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass

from tests.bench.__main__ import free_port, started

MB = 1024 * 1024
_READ = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TransferRates:
    """Median download rates, in MB/s (MiB), and the size they were measured with."""

    megabytes: int
    direct: float
    through: float

    @property
    def ratio(self) -> float:
        """The pass-through's rate as a share of the direct one."""
        return self.through / self.direct


def download(port: int, size: int) -> float:
    """Seconds to download `size` bytes from `port` on one fresh connection, read to its end."""
    head = f"GET /v1/files/file-bench/content?bytes={size} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    buffer = bytearray(_READ)
    received = 0
    started_at = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode())
        while read := sock.recv_into(buffer):
            received += read
    seconds = time.perf_counter() - started_at
    if received < size:
        raise SystemExit(f"only {received} of {size} bytes arrived from port {port}")
    return seconds


def measure_transfer(megabytes: int = 100, rounds: int = 5) -> TransferRates:
    """Start the upstream and Turnout, download `megabytes` `rounds` times each way, return the median rates."""
    size = megabytes * MB
    with ExitStack() as stack:
        upstream = free_port()
        stack.enter_context(
            started([sys.executable, "-m", "tests.bench.transfer", "--upstream", str(upstream)], upstream)
        )
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TURNOUT_"))},
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
            "OPENAI_API_KEY": "sk-bench-transfer-key-0123456789",
            "TURNOUT_LOG_LEVEL": "warning",
            "TURNOUT_ACCESS_LOG": "false",
        }
        stack.enter_context(started([sys.executable, "-m", "proxy", "serve", "--port", str(port)], port, env))
        download(upstream, MB)  # warm up both, and the pool
        download(port, MB)
        direct, through = [], []
        for _ in range(rounds):
            direct.append(size / MB / download(upstream, size))
            through.append(size / MB / download(port, size))
    return TransferRates(megabytes, statistics.median(direct), statistics.median(through))


def _serve_upstream(port: int) -> None:
    from aiohttp import web

    from tests.passthrough_upstream import PassthroughUpstream

    web.run_app(PassthroughUpstream().app(), host="127.0.0.1", port=port, print=None, access_log=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # the upstream process itself
    args = parser.parse_args()
    if args.upstream is not None:
        _serve_upstream(args.upstream)
        return
    rates = measure_transfer(args.megabytes, args.rounds)
    print(f"a {rates.megabytes} MB download, median of {args.rounds} rounds, raw-socket client")
    print(f"  direct from the upstream   {rates.direct:8.1f} MB/s")
    print(f"  through the pass-through   {rates.through:8.1f} MB/s")
    print(f"  ratio                      {rates.ratio:8.1%}  (issue 13 asks for at least 80%)")


if __name__ == "__main__":
    main()
