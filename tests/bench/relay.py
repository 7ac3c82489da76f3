"""The relay's own CPU per event, in process and repeatable: `python -m tests.bench.relay [--streams N] [--profile]`.

Each stream is the chain a streamed chat answer goes through in Turnout, with its real parts: the chat route's
event splitting, redaction and check (`OpenAIChatRoute`, on an upstream that yields the simulator's chunks, one
event a read), the cache's recording of a miss, the relay (`proxy.streaming`: usage tee, end) and the ASGI
writer (`proxy.asgi.send_stream`) into a `send` that keeps nothing. No sockets and no other process: what is
printed is Python's time in Turnout's code per event (process CPU / events), which `tests.bench.streams` measures
on a whole server. `--profile` prints cProfile's top functions by their own time.

Never part of the test suite's pass/fail: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import msgspec
from litestar.types import Receive

from proxy.asgi import send_stream
from proxy.cache.lookup import Ticket
from proxy.endpoints.chat import CHAT
from proxy.streaming import open_relay
from proxy.wire.redaction import Redactor
from routes import Call
from routes.openai_chat import OpenAIChatRoute
from routes.upstream import Upstream

CHUNKS = 100
BODY = b'{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"Say hello in one word."}]}'


def simulated_events(chunks: int) -> list[bytes]:
    """The simulator's stream, one event per read: a role chunk, `chunks` words, the finish, the usage, `[DONE]`."""
    envelope: dict[str, Any] = {"id": "chatcmpl-8385dbbd3f4240449218f8ea3fccb", "object": "chat.completion.chunk"}
    envelope |= {"created": 1796395128, "model": "gpt-4", "service_tier": "default", "system_fingerprint": "fp_s1"}

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None, choices: bool = True) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {**envelope, "usage": usage, "choices": [choice] if choices else []}
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": f" word{i}"}) for i in range(chunks)]
    events.append(chunk({}, finish="stop"))
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    events.append(chunk({}, usage=usage, choices=False))
    return [*events, b"data: [DONE]\n\n"]


class _Upstream:
    """An upstream whose stream is the given events, each its own read."""

    name = "bench"

    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.redactor = Redactor(["sk-bench-not-a-real-key"])

    def timeout(self, total: float | None) -> None:
        return None

    async def post_stream(self, *_: object) -> AsyncGenerator[bytes, None]:
        for event in self.events:
            yield event


async def _never() -> Mapping[str, Any]:
    await asyncio.Event().wait()
    return {}


async def _discard(_: Any) -> None:
    return None


async def one_stream(route: OpenAIChatRoute, call: Call[Any]) -> None:
    opened = await route.stream(call)
    events = Ticket(status="bypass").recording(opened.events, CHAT)
    relay = await open_relay(
        events, CHAT, wants_usage=False, on_usage=lambda *_: None, on_end=lambda *_: b"", on_cut=lambda _: None
    )
    await send_stream(_discard, cast("Receive", _never), relay, [], CHAT.ends)


async def run(streams: int) -> tuple[float, int]:
    events = simulated_events(CHUNKS)
    route = OpenAIChatRoute("bench", cast("Upstream", _Upstream(events)), "gpt-4")
    call = Call(endpoint=CHAT, body=CHAT.decode(BODY), headers={})
    await one_stream(route, call)  # warm
    started = time.process_time()
    for _ in range(streams):
        await one_stream(route, call)
    return time.process_time() - started, streams * (len(events) - 1)  # the usage-only event is not relayed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="cProfile's top 25 by own time")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    seconds, events = asyncio.run(run(args.streams))
    if profile is not None:
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    print(f"{args.streams} streams of {CHUNKS} chunks: {seconds / events * 1e6:.2f} us of CPU per relayed event")


if __name__ == "__main__":
    main()
