"""Turnout against its upstream, side by side in one run: `python -m tests.bench` (or `make bench`).

Starts the simulated upstream (zero latency), Turnout with one worker in front of it, and a reference
pass-through (the least a Litestar + aiohttp proxy can do on this machine), then measures each the
same way, alternating, for several rounds, and prints medians and ratios:

- non-streaming latency p50/p99 at concurrency 1 (wrk),
- non-streaming requests/s at concurrency 64 (wrk),
- streaming time to first byte at concurrency 1 (a raw-socket client that adds almost nothing),
- streams/s of 20 chunks at concurrency 16 (wrk; a response is done when its stream ends),
- the same for the Responses API (`POST /v1/responses`, its typed events), and embeddings requests/s at
  concurrency 64: their overhead (Turnout/direct) beside chat's,
- a 100 MB download through the pass-through and directly (`tests.bench.transfer`).

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

CHAT_BODY = '{"model":"gpt-4","messages":[{"role":"user","content":"Say hello in one word."}]}'
STREAM_BODY = '{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"Say hello in one word."}]}'
PATH = "/v1/chat/completions"
RESPONSES_STREAM_BODY = '{"model":"gpt-4","stream":true,"input":"Say hello in one word."}'
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_BODY = '{"model":"text-embedding-3-small","input":"Say hello in one word."}'
EMBEDDINGS_PATH = "/v1/embeddings"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a benchmark process exited early with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def started(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        wait_until_listening(port, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=15)


def find_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing Debian's package ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)  # noqa: S607
        wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("the benchmark needs wrk (Debian: apt-get install wrk)")
    return wrk


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(wrk: str, url: str, body: str, connections: int, seconds: int) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = [[{body}]]\nwrk.headers["Content-Type"] = "application/json"\n')
    try:
        command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    finally:
        Path(script.name).unlink()
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output) or "Socket errors" in output:
        raise SystemExit(f"wrk saw errors against {url}:\n{output}")
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.MULTILINE))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return WrkResult(rps=rps, p50_ms=_ms(percentiles["50"]), p99_ms=_ms(percentiles["99"]))


async def _time_to_first_byte(port: int, requests: int) -> list[float]:
    """Seconds from sending a streaming request to its first body byte, one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(STREAM_BODY)}\r\n\r\n{STREAM_BODY}"
    ).encode()
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        writer.write(head)
        headers = await reader.readuntil(b"\r\n\r\n")
        first = await reader.readuntil(b"\r\n")  # the first chunk's size line: the body has started
        samples.append(time.perf_counter() - start)
        if b"chunked" not in headers.lower() or not first.strip():
            raise SystemExit(f"expected a chunked stream from port {port}, got {headers!r}")
        size = int(first.strip(), 16)
        while size:  # read the rest of the stream to reuse the connection
            await reader.readexactly(size + 2)
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(2)
    writer.close()
    return samples


def time_to_first_byte_ms(port: int, requests: int) -> float:
    samples = asyncio.run(_time_to_first_byte(port, requests))
    return statistics.median(samples[len(samples) // 10 :]) * 1000  # the first tenth warms up


@dataclass
class Figures:
    p50: list[float]
    p99: list[float]
    rps: list[float]
    ttfb: list[float]
    streams: list[float]
    responses_streams: list[float]
    embeddings_rps: list[float]


def measure(wrk: str, port: int, seconds: int, figures: Figures) -> None:
    url = f"http://127.0.0.1:{port}{PATH}"
    single = run_wrk(wrk, url, CHAT_BODY, 1, seconds)
    figures.p50.append(single.p50_ms)
    figures.p99.append(single.p99_ms)
    figures.rps.append(run_wrk(wrk, url, CHAT_BODY, 64, seconds).rps)
    figures.ttfb.append(time_to_first_byte_ms(port, 1000))
    figures.streams.append(run_wrk(wrk, url, STREAM_BODY, 16, seconds).rps)
    responses = f"http://127.0.0.1:{port}{RESPONSES_PATH}"
    figures.responses_streams.append(run_wrk(wrk, responses, RESPONSES_STREAM_BODY, 16, seconds).rps)
    embeddings = f"http://127.0.0.1:{port}{EMBEDDINGS_PATH}"
    figures.embeddings_rps.append(run_wrk(wrk, embeddings, EMBEDDINGS_BODY, 64, seconds).rps)


def report(results: dict[str, Figures]) -> None:
    direct = results["direct"]
    rows = [
        ("non-stream p50 at c1 (ms)", "p50", "lower"),
        ("non-stream p99 at c1 (ms)", "p99", "lower"),
        ("non-stream requests/s at c64", "rps", "higher"),
        ("stream time to first byte at c1 (ms)", "ttfb", "lower"),
        ("streams/s of 20 chunks at c16", "streams", "higher"),
        ("Responses streams/s at c16", "responses_streams", "higher"),
        ("embeddings requests/s at c64", "embeddings_rps", "higher"),
    ]
    names = list(results)
    print(f"\n{'median of rounds':40}" + "".join(f"{name:>14}" for name in names) + f"{'turnout/direct':>16}")
    for label, field, _ in rows:
        values = {name: statistics.median(getattr(figures, field)) for name, figures in results.items()}
        ratio = values["turnout"] / statistics.median(getattr(direct, field))
        print(f"{label:40}" + "".join(f"{values[name]:14.3f}" for name in names) + f"{ratio:16.2f}")
    added = statistics.median(results["turnout"].p50) - statistics.median(direct.p50)
    ttfb_added = statistics.median(results["turnout"].ttfb) - statistics.median(direct.ttfb)
    print(f"\nTurnout adds {added:.3f} ms at the median (c1); its stream time to first byte is {ttfb_added:.3f} ms")
    print("more than the upstream's own.")

    def overhead(field: str) -> float:
        """Turnout's throughput as a share of the direct upstream's on one measurement (1: no overhead)."""
        ratio: float = statistics.median(getattr(results["turnout"], field)) / statistics.median(getattr(direct, field))
        return ratio

    for label, field, chat in (
        ("Responses streams", "responses_streams", "streams"),
        ("embeddings requests", "embeddings_rps", "rps"),
    ):
        print(
            f"{label}: Turnout keeps {overhead(field):.0%} of the direct rate, chat at the same concurrency"
            f" {overhead(chat):.0%}: {overhead(field) / overhead(chat):.2f} of chat's."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--no-reference", action="store_true", help="skip the bare pass-through reference")
    args = parser.parse_args()
    wrk = find_wrk()
    python = sys.executable
    upstream, turnout, reference = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "TURNOUT_LOG_LEVEL": "warning",
    }
    simulate = [python, "-m", "proxy", "simulate", "--port", str(upstream), "--chunks", "18"]
    serve = [python, "-m", "proxy", "serve", "--port", str(turnout), "--workers", "1"]
    floor = [python, "-m", "tests.bench.reference", str(reference), str(upstream)]
    targets = {"direct": upstream, "turnout": turnout}
    if not args.no_reference:
        targets["reference"] = reference
    with ExitStack() as stack:
        stack.enter_context(started(simulate, upstream))
        stack.enter_context(started(serve, turnout, env))
        if "reference" in targets:
            stack.enter_context(started(floor, reference))
        print(f"cores: {os.cpu_count()}; rounds: {args.rounds}; wrk runs of {args.seconds} s; 20-chunk streams")
        results = {name: Figures([], [], [], [], [], [], []) for name in targets}
        for _ in range(3):  # warm every server's pools and caches
            for port in targets.values():
                run_wrk(wrk, f"http://127.0.0.1:{port}{PATH}", CHAT_BODY, 64, 1)
        for round_number in range(1, args.rounds + 1):
            for name, port in targets.items():
                measure(wrk, port, args.seconds, results[name])
            print(f"round {round_number} of {args.rounds} done", file=sys.stderr)
    report(results)
    from tests.bench.transfer import measure_transfer  # it starts servers of its own, after these have stopped

    rates = measure_transfer()
    print(
        f"\na {rates.megabytes} MB pass-through download: {rates.through:.0f} MB/s through Turnout,"
        f" {rates.direct:.0f} MB/s direct: {rates.ratio:.0%} of the direct rate (a bare uvicorn + aiohttp relay"
        f" {rates.bare / rates.direct:.0%}, a splice relay {rates.spliced / rates.direct:.0%})."
    )


if __name__ == "__main__":
    main()
