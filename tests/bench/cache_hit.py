"""A cache hit through the whole proxy, from memory and from Redis, side by side with a miss, in one run.

`python -m tests.bench.cache_hit [--requests N] [--rounds R]` starts the simulated upstream (zero
latency), a redis-server of its own on a free loopback port, and two Turnouts (one worker each): one
with the in-process cache, one with the Redis cache. Each round measures, alternating, at
concurrency 1 on one keep-alive connection:

- hit: the same deterministic request again and again (stored once before the round);
- stream hit: the same request with `stream: true`, replayed as SSE (read to its end);
- miss: a deterministic request with a new question each time (every one goes to the upstream).

It prints medians over the rounds of the client-side p50 and of the server-side median, read from the
`server-timing: turnout;dur=MS` header Turnout sets (its chat handler's time from the request's
arrival to the response: body read, decision, cache lookup or upstream call, replay). It also checks,
by request id, that no hit reached the upstream (the simulator records every call).

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about their size.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.bench.__main__ import free_port, started
from tests.redis_server import RedisServer

PATH = "/v1/chat/completions"
POLICY = """\
upstreams:
  sim: {{base_url: "http://127.0.0.1:{sim}/v1", api_key: sk-bench}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
cache: {cache}
rules:
  - name: default
    route: gpt4
"""


def body(question: str, stream: bool = False) -> bytes:
    messages = [{"role": "user", "content": question}]
    return json.dumps({"model": "gpt-4", "messages": messages, "temperature": 0, "stream": stream}).encode()


def measure(port: int, bodies: Iterator[bytes], count: int, expect: str) -> tuple[list[float], list[float], list[str]]:
    """(client seconds, server milliseconds, request ids) for `count` requests on one connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    client, server, ids = [], [], []
    for _ in range(count):
        request_id = f"bench-{uuid.uuid4().hex}"
        started_at = time.perf_counter()
        connection.request("POST", PATH, next(bodies), {"content-type": "application/json", "x-request-id": request_id})
        response = connection.getresponse()
        response.read()
        client.append(time.perf_counter() - started_at)
        if response.status != 200 or response.getheader("x-turnout-cache") != expect:
            raise SystemExit(f"expected a 200 {expect}, got {response.status} {response.getheader('x-turnout-cache')}")
        server.append(float(response.getheader("server-timing", "turnout;dur=nan").split("dur=")[1]))
        ids.append(request_id)
    connection.close()
    return client, server, ids


def upstream_saw(sim_port: int, request_ids: list[str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", sim_port)
    seen = 0
    for request_id in request_ids:
        connection.request("GET", f"/_simulator/calls/{request_id}")
        response = connection.getresponse()
        response.read()
        seen += response.status == 200
    connection.close()
    return seen


@contextmanager
def turnout(sim_port: int, cache: str, folder: Path) -> Iterator[int]:
    path = folder / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(POLICY.format(sim=sim_port, cache=cache))
    port = free_port()
    env = {**os.environ, "TURNOUT_CONFIG": str(path), "TURNOUT_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "proxy", "serve", "--port", str(port)]
    with started(command, port, env):
        yield port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        redis = RedisServer()
        redis.start()
        stack.callback(redis.close)
        sim = free_port()
        simulate = [sys.executable, "-m", "proxy", "simulate", "--port", str(sim)]
        stack.enter_context(started(simulate, sim))
        backends = {
            "memory": stack.enter_context(turnout(sim, "{max_bytes: 67108864}", folder)),
            "redis": stack.enter_context(turnout(sim, f'{{url: "{redis.url}"}}', folder)),
        }
        results: dict[str, list[tuple[float, float]]] = {}
        hit_ids: list[str] = []
        for round_ in range(args.rounds):
            for backend, port in backends.items():
                question = f"What is a cache? ({round_})"
                stored = itertools.repeat(body(question))
                measure(port, stored, 1, "miss")  # store it
                time.sleep(0.05)
                for kind, bodies, expect in (
                    ("hit", stored, "hit"),
                    ("stream hit", itertools.repeat(body(question, stream=True)), "hit"),
                    ("miss", (body(f"Question {uuid.uuid4().hex}") for _ in itertools.count()), "miss"),
                ):
                    client, server, ids = measure(port, bodies, args.requests, expect)
                    warm = len(client) // 10
                    row = (statistics.median(client[warm:]) * 1000, statistics.median(server[warm:]))
                    results.setdefault(f"{backend} {kind}", []).append(row)
                    if kind != "miss":
                        hit_ids += ids
        print(f"{args.rounds} rounds of {args.requests} requests each, concurrency 1; medians of the rounds' medians")
        print(f"{'':<18}{'client p50 (ms)':>16}{'server median (ms)':>20}{'vs miss (server)':>18}")
        for backend in backends:
            miss_server = statistics.median(r[1] for r in results[f"{backend} miss"])
            for kind in ("hit", "stream hit", "miss"):
                rows = results[f"{backend} {kind}"]
                client_ms, server_ms = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
                print(f"{backend + ' ' + kind:<18}{client_ms:>16.3f}{server_ms:>20.3f}{server_ms / miss_server:>18.2f}")
        sample = hit_ids[:: max(1, len(hit_ids) // 500)]
        print(f"upstream calls for {len(sample)} sampled hits (by request id): {upstream_saw(sim, sample)}")


if __name__ == "__main__":
    main()
