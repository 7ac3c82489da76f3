"""An upstream for the pass-through's tests and its transfer benchmark: aiohttp on a loopback port, on a thread.

It stands at the upstream boundary (the one place a fake may), records what each request brought (method,
target as sent, headers, body size and digest, whether its client left) by `x-request-id`, and answers:

- `/v1/files/{id}/content?bytes=N[&chunked=1]`: N bytes of `pattern(N)`, with `content-length` (or chunked),
  `content-disposition` and the rate-limit and `openai-*` headers, plus some that must stay behind;
- `/v1/status/{code}`: an OpenAI-format error that quotes the key it was sent, with `retry-after`;
- `/v1/page/{code}`: an error that is an HTML page, as a proxy on the way would answer;
- `/v1/slow?seconds=S`: an answer after S seconds (a client that leaves first is recorded as `cancelled`);
- `/v1/drop`: closes the connection without an answer; `/v1/midway`: half a body, then closes;
- anything else, any method: the body read as it streams in, and a JSON echo of the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

BLOCK = bytes(range(256)) * 256
"""64 KiB: what `pattern` repeats."""


def pattern(size: int) -> Iterator[bytes]:
    """`size` bytes of a repeated 64 KiB block, in blocks (the last one cut to size)."""
    whole, rest = divmod(size, len(BLOCK))
    for _ in range(whole):
        yield BLOCK
    if rest:
        yield BLOCK[:rest]


def digest_of(size: int) -> str:
    """The SHA-256 of `pattern(size)`."""
    sha = hashlib.sha256()
    for block in pattern(size):
        sha.update(block)
    return sha.hexdigest()


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    target: str
    """Path and query exactly as they arrived (still percent-encoded)."""
    headers: list[tuple[str, str]]
    size: int = 0
    sha256: str = ""
    outcome: str = "running"
    """`running`, `completed`, or `cancelled` (its client, Turnout, went away first)."""
    ended_at: float | None = None


@dataclass
class PassthroughUpstream:
    """The running upstream (see the module) and what it saw, by `x-request-id`."""

    port: int = 0
    seen: dict[str, Seen] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def header(self, request_id: str, name: str) -> list[str]:
        """The values of header `name` in the request `request_id`, as received."""
        return [value for key, value in self.seen[request_id].headers if key.lower() == name]

    def wait_for(self, request_id: str, outcome: str, timeout: float = 10.0) -> Seen:
        """The record of `request_id` once its outcome is `outcome` (or as it is after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.seen.get(request_id)
            if seen is not None and seen.outcome == outcome:
                return seen
            time.sleep(0.02)
        return self.seen[request_id]

    def _record(self, request: web.Request) -> Seen:
        seen = Seen(
            request.method,
            request.raw_path,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
        )
        self.seen[request.headers.get("x-request-id", f"anonymous-{len(self.seen)}")] = seen
        return seen

    async def _consume(self, request: web.Request, seen: Seen) -> None:
        sha = hashlib.sha256()
        async for chunk in request.content.iter_any():
            seen.size += len(chunk)
            sha.update(chunk)
        seen.sha256 = sha.hexdigest()

    @staticmethod
    def _done(answer: web.StreamResponse, seen: Seen) -> web.StreamResponse:
        seen.outcome, seen.ended_at = "completed", time.time()
        return answer

    async def echo(self, request: web.Request) -> web.StreamResponse:
        seen = self._record(request)
        try:
            await self._consume(request, seen)
        except (asyncio.CancelledError, ConnectionError):
            seen.outcome, seen.ended_at = "cancelled", time.time()
            raise
        body = {"method": seen.method, "target": seen.target, "headers": seen.headers}
        answer = web.json_response({**body, "size": seen.size, "sha256": seen.sha256})
        return self._done(answer, seen)

    async def content(self, request: web.Request) -> web.StreamResponse:
        seen = self._record(request)
        size = int(request.query.get("bytes", "0"))
        headers = {
            "content-type": "application/octet-stream",
            "content-disposition": 'attachment; filename="data.jsonl"',
            "x-ratelimit-remaining-requests": "99",
            "openai-processing-ms": "7",
            "openai-organization": "the-upstream-s-own-org",
            "set-cookie": "session=upstream",
            "keep-alive": "timeout=5",
            "proxy-authenticate": "Basic",
            "x-upstream-internal": "1",
        }
        answer = web.StreamResponse(headers=headers)
        if request.query.get("chunked"):
            answer.enable_chunked_encoding()
        else:
            answer.content_length = size
        try:
            await answer.prepare(request)
            for block in pattern(size):
                await answer.write(block)
            await answer.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            seen.outcome, seen.ended_at = "cancelled", time.time()
            raise
        return self._done(answer, seen)

    async def status(self, request: web.Request) -> web.StreamResponse:
        seen = self._record(request)
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        error = {"message": f"Rejected key {key}.", "type": "invalid_request_error", "param": None, "code": "x"}
        headers = {"retry-after": "7", "x-ratelimit-reset-requests": "1s", "set-cookie": "a=b"}
        answer = web.json_response({"error": error}, status=int(request.match_info["code"]), headers=headers)
        return self._done(answer, seen)

    async def page(self, request: web.Request) -> web.StreamResponse:
        seen = self._record(request)
        answer = web.Response(text="<html><h1>Bad gateway</h1></html>", content_type="text/html")
        answer.set_status(int(request.match_info["code"]))
        return self._done(answer, seen)

    async def slow(self, request: web.Request) -> web.StreamResponse:
        seen = self._record(request)
        try:
            await self._consume(request, seen)
            await asyncio.sleep(float(request.query.get("seconds", "30")))
        except asyncio.CancelledError:
            seen.outcome, seen.ended_at = "cancelled", time.time()
            raise
        return self._done(web.json_response({"slept": True}), seen)

    async def drop(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    async def midway(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        answer = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        answer.content_length = 4 * len(BLOCK)
        await answer.prepare(request)
        await answer.write(BLOCK)
        assert request.transport is not None
        request.transport.abort()
        return answer

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_get("/v1/status/{code}", self.status)
        app.router.add_get("/v1/page/{code}", self.page)
        app.router.add_post("/v1/slow", self.slow)
        app.router.add_get("/v1/drop", self.drop)
        app.router.add_get("/v1/midway", self.midway)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app


@contextlib.contextmanager
def passthrough_upstream() -> Iterator[PassthroughUpstream]:
    """Run a `PassthroughUpstream` on a free loopback port, on a thread of its own, for the block."""
    upstream = PassthroughUpstream()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(upstream.app(), handler_cancellation=True, access_log=None)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        upstream.port = runner.addresses[0][1]
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="passthrough-upstream", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield upstream
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


__all__ = ["BLOCK", "PassthroughUpstream", "Seen", "digest_of", "passthrough_upstream", "pattern"]
