"""What tracing costs: `python -m tests.bench.tracing [--rounds R] [--seconds S]` (part of `make bench`).

Starts the simulated upstream (zero latency), the bare pass-through (`tests.bench.reference`), Turnout with tracing
off (no endpoint: the default), and Turnout exporting every span over OTLP/HTTP to a receiver in a process of its
own (`tests.otlp_receiver`, which decodes each export). wrk measures, alternating for R rounds, non-streaming
requests/s at concurrency 64 and streams/s of 20 chunks at concurrency 16; printed are the medians and the
same-run ratios: tracing off / the bare pass-through, tracing on / tracing off. With `--base DIR` (a checkout of
the code before tracing, e.g. `git archive e0d356a | tar -x -C DIR`), a Turnout run from there is measured too,
and tracing off / it says what the unconfigured hooks cost.

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import ExitStack

from tests.bench.__main__ import CHAT_BODY, PATH, STREAM_BODY, find_wrk, free_port, run_wrk, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--base", help="a checkout of Turnout without tracing, measured beside (see above)")
    args = parser.parse_args()
    wrk, python = find_wrk(), sys.executable
    upstream, reference, off, on, receiver, base = (free_port() for _ in range(6))
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
        "TURNOUT_LOG_LEVEL": "warning",
    }
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_TRACES_EXPORTER", None)
    traced = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver}"}
    serve = [python, "-m", "proxy", "serve", "--workers", "1", "--port"]
    targets = {"reference": reference, "tracing off": off, "tracing on": on}
    if args.base:
        targets["base"] = base
    points = {"requests/s at c64": (CHAT_BODY, 64), "streams/s of 20 chunks at c16": (STREAM_BODY, 16)}
    results: dict[str, dict[str, list[float]]] = {point: {name: [] for name in targets} for point in points}
    with ExitStack() as stack:
        stack.enter_context(
            started([python, "-m", "proxy", "simulate", "--port", str(upstream), "--chunks", "18"], upstream)
        )
        stack.enter_context(started([python, "-m", "tests.otlp_receiver", str(receiver)], receiver))
        stack.enter_context(started([python, "-m", "tests.bench.reference", str(reference), str(upstream)], reference))
        stack.enter_context(started([*serve, str(off)], off, env))
        stack.enter_context(started([*serve, str(on)], on, traced))
        if args.base:  # `python -m proxy` from the other checkout: its directory first on the path
            run = (
                f"import runpy, sys; sys.path.insert(0, {args.base!r}); runpy.run_module('proxy', run_name='__main__')"
            )
            stack.enter_context(started([python, "-c", run, *serve[3:], str(base)], base, env))
        for port in targets.values():  # warm the pools
            run_wrk(wrk, f"http://127.0.0.1:{port}{PATH}", CHAT_BODY, 64, 1)
        print(f"cores: {os.cpu_count()}; rounds: {args.rounds}; wrk runs of {args.seconds} s")
        for round_number in range(1, args.rounds + 1):
            for point, (body, connections) in points.items():
                for name, port in targets.items():
                    rate = run_wrk(wrk, f"http://127.0.0.1:{port}{PATH}", body, connections, args.seconds).rps
                    results[point][name].append(rate)
            print(f"round {round_number} of {args.rounds} done", file=sys.stderr)
    extra = f"{'off/base':>10}" if args.base else ""
    header = "".join(f"{name:>14}" for name in targets) + f"{'off/bare':>10}{'on/off':>10}" + extra
    print(f"\n{'median of rounds':34}" + header)
    for point, rates in results.items():
        medians = {name: statistics.median(values) for name, values in rates.items()}
        ratios = [medians["tracing off"] / medians["reference"], medians["tracing on"] / medians["tracing off"]]
        if args.base:
            ratios.append(medians["tracing off"] / medians["base"])
        print(
            f"{point:34}"
            + "".join(f"{medians[name]:14.1f}" for name in targets)
            + "".join(f"{r:10.2f}" for r in ratios)
        )


if __name__ == "__main__":
    main()
