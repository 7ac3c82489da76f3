"""What recording metrics costs per request: `python -m tests.bench.metrics_recording`.

Side by side, alternating, in one run (the best of several `timeit` repeats each), microseconds per
request:

- the request path without metrics: `RequestIdMiddleware` around a stand-in chat handler that fills the
  request's `Tally` as the real one does (decision, upstream timing) and sends a JSON answer; no
  pricing, no `Metrics`, no access log;
- the same request path with the usage priced and a `Recorder` to `Metrics` (in flight, `record()` at the end);
- the same with the access log too (a JSON line through `logging`, written to /dev/null);
- `Metrics.record()` alone, for a plain answer and for one with a fallback, a retry and errors;
- `Metrics.record()` followed each time by `Metrics.flush()`: the worst case, a request alone in its
  flush interval (a request only adds to plain numbers; the writes to prometheus_client happen at a
  flush, every 0.5 s, at a scrape and at shutdown, once per changed value whatever the traffic);
- a `Tally` made, filled and priced (`charge_for`: the price lookup, the charge and the baseline in Decimal).

Then the same again in a child process in prometheus_client's multiprocess mode (`serve --workers N`),
where a flush writes each value to a memory-mapped file.

Never part of the test suite: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any

from proxy.accounting.accesslog import ACCESS_LOGGER, AccessLog
from proxy.accounting.cost import PriceTable
from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import Tally
from proxy.logs import RedactingFormatter
from proxy.middleware import RequestIdMiddleware, tally_of
from proxy.wire.errors import upstream_status_error
from proxy.wire.schemas import Usage

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
PRICES = PriceTable(baseline_model="gpt-4", known_models=[FT, "gpt-4"])
USAGE = Usage(prompt_tokens=412, completion_tokens=96, total_tokens=508)
BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}'
SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


async def chat_handler(scope: Any, receive: Any, send: Any, *, priced: bool = True) -> None:
    """Fills the tally as `proxy.api.chat_completions` and the pipeline do, then answers."""
    tally = tally_of(scope)
    tally.routed = True
    tally.decided("support-ft", "default")
    started = time.perf_counter()
    tally.answered_at = time.perf_counter()
    tally.upstream_seconds += tally.answered_at - started
    if priced:
        tally.charge_for(PRICES, FT, USAGE)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY, "more_body": False})


async def unpriced_chat_handler(scope: Any, receive: Any, send: Any) -> None:
    """The same without pricing the usage: the path as it was before costs and metrics."""
    await chat_handler(scope, receive, send, priced=False)


async def _receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    pass


def per_request(middleware: RequestIdMiddleware, loop: asyncio.AbstractEventLoop, number: int) -> Callable[[], None]:
    async def many() -> None:
        for _ in range(number):
            scope: Any = {**SCOPE, "state": {}}
            await middleware(scope, _receive, _send)

    return lambda: loop.run_until_complete(many())


def best_us(function: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(function, number=1, repeat=repeat)) / number * 1e6


def record_only(metrics: Metrics, *, eventful: bool) -> Callable[[], None]:
    def once() -> None:
        tally = _tally()
        if eventful:
            tally.fallback_from = ("gpt4",)
            tally.failed_attempt("gpt4", upstream_status_error(500, b""), retried=True)
            tally.failed_attempt("gpt4", upstream_status_error(500, b""), retried=False)
        metrics.record(tally)

    return once


def record_and_flush(metrics: Metrics) -> Callable[[], None]:
    def once() -> None:
        metrics.record(_tally())
        metrics.flush()

    return once


def _tally() -> Tally:
    tally = Tally(request_id="req-1", routed=True, status=200)
    tally.decided("support-ft", "default")
    tally.answered_at = tally.started + 0.001
    tally.upstream_seconds, tally.ended_at = 0.001, tally.started + 0.0012
    tally.charge_for(PRICES, FT, USAGE)
    return tally


def run(number: int, repeat: int) -> None:
    access = logging.getLogger(ACCESS_LOGGER)
    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    metrics = Metrics(multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    loop = asyncio.new_event_loop()
    paths = {
        "request path, nothing priced or recorded": RequestIdMiddleware(unpriced_chat_handler),
        "+ usage priced, cost headers": RequestIdMiddleware(chat_handler),
        "+ metrics recorded": RequestIdMiddleware(chat_handler, recorder=Recorder(metrics)),
        "+ access log line": RequestIdMiddleware(chat_handler, recorder=Recorder(metrics, AccessLog())),
    }
    timings: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeat):  # alternate, so that the machine's noise falls on each alike
        for name, middleware in paths.items():
            timings[name].append(best_us(per_request(middleware, loop, number), number, 1))
    previous = None
    for name, values in timings.items():
        value = min(values)
        added = "" if previous is None else f"  ({value - previous:+6.2f} µs)"
        print(f"  {name:44} {value:7.2f} µs{added}")
        previous = value
    print(
        f"  {'Metrics.record() alone':44} {best_us(record_only(metrics, eventful=False), 1, number * repeat):7.2f} µs"
    )
    eventful = best_us(record_only(metrics, eventful=True), 1, number * repeat)
    print(f"  {'  ... with a fallback, a retry, 2 errors':44} {eventful:7.2f} µs")
    flushed = best_us(record_and_flush(metrics), 1, number * repeat)
    print(f"  {'  ... and a flush after each (worst case)':44} {flushed:7.2f} µs")
    print(f"  {'a Tally made, filled and priced':44} {best_us(_tally, 1, number * repeat):7.2f} µs")
    loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=2000, help="requests per timing")
    parser.add_argument("--repeat", type=int, default=15, help="timings per variant (the best counts)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run(args.number, args.repeat)
        return
    print("one process (serve --workers 1):")
    run(args.number, args.repeat)
    print("multiprocess mode (serve --workers N):")
    with tempfile.TemporaryDirectory(prefix="turnout-bench-metrics-") as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        command = [sys.executable, "-m", "tests.bench.metrics_recording", "--child", "--number", str(args.number)]
        subprocess.run([*command, "--repeat", str(args.repeat)], env=env, check=True)  # noqa: S603


if __name__ == "__main__":
    main()
