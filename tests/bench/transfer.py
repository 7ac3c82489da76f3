"""A 100 MB download straight from an upstream, through Turnout's pass-through, and through two bare relays.

`python -m tests.bench.transfer [--megabytes N] [--rounds R]` starts an aiohttp upstream in a process of
its own (`tests.passthrough_upstream`, serving `GET /v1/files/{id}/content?bytes=N`), and three relays in
front of it, each a process of its own: Turnout (one worker, no policy); a bare relay of the same stack
with no Turnout code (`_relay_app`: uvicorn with uvloop and httptools, aiohttp's client, one ASGI `send` a
read), the floor of this stack as `tests.bench.reference` is for chat; and a splice relay
(`_serve_splice`: no HTTP, no event loop, the bytes moved socket to socket in the kernel), the floor of any
third process on this machine. It downloads the file R times from each, alternating, with a raw-socket
client that adds almost nothing, and prints the median rates and their ratios to the direct one (issue 13
asks for at least 80%). `measure_transfer()` returns them, for `make bench`.

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from tests.bench.__main__ import free_port, started

MB = 1024 * 1024
_READ = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TransferRates:
    """Median download rates, in MB/s (MiB), and the size they were measured with."""

    megabytes: int
    direct: float
    through: float
    bare: float
    """Through the bare relay: what this stack (uvicorn, aiohttp's client), with no Turnout code, reaches."""
    spliced: float
    """Through a relay that never copies the bytes into its own memory: what any third process costs here."""

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
        relay, splice = free_port(), free_port()
        itself = [sys.executable, "-m", "tests.bench.transfer", "--upstream", str(upstream)]
        stack.enter_context(started([*itself, "--relay", str(relay)], relay))
        stack.enter_context(started([*itself, "--splice", str(splice)], splice))
        ports = (upstream, port, relay, splice)
        for each in ports:  # warm up all of them, and the pools
            download(each, MB)
        rates: list[list[float]] = [[] for _ in ports]
        for _ in range(rounds):
            for each, measured in zip(ports, rates, strict=True):
                measured.append(size / MB / download(each, size))
    direct, through, bare, spliced = (statistics.median(measured) for measured in rates)
    return TransferRates(megabytes, direct, through, bare, spliced)


def _serve_upstream(port: int) -> None:
    from aiohttp import web

    from tests.passthrough_upstream import PassthroughUpstream

    web.run_app(PassthroughUpstream().app(), host="127.0.0.1", port=port, print=None, access_log=None)


def _relay_app(upstream: int) -> Any:
    """A bare relay: GET the same target from the upstream, send its length and body on, chunk by chunk."""
    import aiohttp

    sessions: list[aiohttp.ClientSession] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                sessions.append(aiohttp.ClientSession())
                await send({"type": "lifespan.startup.complete"})
            await sessions[0].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        url = f"http://127.0.0.1:{upstream}{scope['path']}?{scope['query_string'].decode()}"
        async with sessions[0].get(url, auto_decompress=False) as response:
            headers = [(b"content-length", response.headers["content-length"].encode())]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def _serve_relay(port: int, upstream: int) -> None:
    import uvicorn

    uvicorn.run(_relay_app(upstream), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")


def _serve_splice(port: int, upstream: int) -> None:
    """A relay with no HTTP and no event loop: the request head sent on, the answer `splice`d back through a pipe.

    Linux moves the bytes from one socket to the other in the kernel, never through this process's memory:
    the least a third process on the path can cost. One connection at a time (the client makes one).
    """
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            client, _ = server.accept()
            with client, socket.create_connection(("127.0.0.1", upstream)) as source:
                source.sendall(client.recv(_READ))  # the client's whole request head, in one write
                read_end, write_end = os.pipe()
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _READ)
                while moved := os.splice(source.fileno(), write_end, _READ):
                    while moved:
                        moved -= os.splice(read_end, client.fileno(), moved)
                os.close(read_end)
                os.close(write_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # the upstream process itself
    parser.add_argument("--relay", type=int, help=argparse.SUPPRESS)  # the bare relay, to `--upstream`
    parser.add_argument("--splice", type=int, help=argparse.SUPPRESS)  # the splice relay, to `--upstream`
    args = parser.parse_args()
    if args.relay is not None:
        _serve_relay(args.relay, args.upstream)
        return
    if args.splice is not None:
        _serve_splice(args.splice, args.upstream)
        return
    if args.upstream is not None:
        _serve_upstream(args.upstream)
        return
    rates = measure_transfer(args.megabytes, args.rounds)
    print(f"a {rates.megabytes} MB download, median of {args.rounds} rounds, raw-socket client")
    lines = [
        ("direct from the upstream", rates.direct, ""),
        ("through the pass-through", rates.through, "  (issue 13 asks for at least 80%)"),
        ("bare relay", rates.bare, "  (uvicorn + aiohttp, no Turnout code)"),
        ("splice relay", rates.spliced, "  (no HTTP, no copy into user space)"),
    ]
    for name, rate, note in lines:
        print(f"  {name:26} {rate:8.1f} MB/s {rate / rates.direct:7.1%}{note}")


if __name__ == "__main__":
    main()
