"""A hostile OpenAI-compatible upstream on a loopback port: it records every request and echoes the credential.

A stdlib `ThreadingHTTPServer` on a daemon thread of the test process, so that a test can read what it
received without any protocol of its own. `POST /v1/chat/completions` behaves by the `x-hostile` header:

- `400`, `422`, `429`: an OpenAI-format error whose `message`, `param` and `code` carry the key it was
  sent (raw, percent-encoded and JSON-escaped with `\\/`), and, on 429, a `retry-after` that is the key;
- `500`: a plain-text error body with the key straddling byte 500 (where a body is cut short);
- `stream-error`: one content chunk, then an SSE error event that echoes the key;
- `echo`, `stream-echo`: a normal answer (or stream) whose content is the key (with `/` as `\\/` in `echo`);
- a name of `ANSWERS`: that 200 body, which no reader should trust (nesting of 5,000 levels, `1e400`,
  invalid UTF-8, `"choices": "abc"`, usage of 10^30 tokens, ...); a name of `STREAMS`: that 200 stream
  when the request asks for one, else a sound completion (so that a cached stream is what would answer it).

`GET /v1/models/{id}` answers a model object with the id as it decoded it; every other path answers
`{"path": ..., "authorization": ...}`, as an admin endpoint that lists keys would hand them over.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the hostile upstream saw it."""

    method: str
    target: str
    """The request target exactly as it arrived (path and query, still percent-encoded)."""
    authorization: str | None
    body: bytes = b""


@dataclass
class HostileUpstream:
    """The running server and what it received."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def targets(self) -> list[str]:
        return [request.target for request in self.received]


def _key(authorization: str | None) -> str:
    return (authorization or "").removeprefix("Bearer ")


def echoes(key: str) -> dict[str, str]:
    """The forms a hostile upstream echoes a key in."""
    return {
        "raw": key,
        "percent": urllib.parse.quote(key, safe=""),
        "json-slash": key.replace("/", "\\/"),
    }


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunk(content: str) -> bytes:
    chunk = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None, "logprobs": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def nested(levels: int) -> bytes:
    """An array nested `levels` deep."""
    return b"[" * levels + b"]" * levels


def _sound(content: str = "Hello there.") -> bytes:
    return json.dumps(_completion(content)).encode()


def _with(member: bytes, body: bytes | None = None) -> bytes:
    """`body` (a sound completion) with the raw JSON `member` added as its first member."""
    return b"{" + member + b"," + (body or _sound())[1:]


def _replaced(old: str, new: str) -> bytes:
    return _sound().replace(old.encode(), new.encode(), 1)


_USAGE = '"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}'
ANSWERS: dict[str, bytes] = {
    "deep": _with(b'"x_hostile":' + nested(5_000)),
    "deep-200": _with(b'"x_hostile":' + nested(200)),
    "1e400": _with(b'"x_hostile":1e400'),
    "long-integer": _with(b'"x_hostile":' + b"9" * 5_000),
    "invalid-utf8": _sound().replace(b"Hello", b"caf\xe9", 1),
    "choices-abc": _replaced('"choices": [', '"choices": "abc", "x_choices": ['),
    "message-abc": _replaced('"message": {', '"message": "abc", "x_message": {'),
    "content-number": _replaced('"content": "Hello there."', '"content": 5'),
    "model-number": _replaced('"model": "gpt-4o-mini"', '"model": 5'),
    "usage-abc": _replaced(_USAGE, '"usage": "abc"'),
    "usage-huge": _replaced(_USAGE, '"usage": {"prompt_tokens": 1' + "0" * 30 + ', "completion_tokens": 1}'),
    "usage-negative": _replaced(_USAGE, '"usage": {"prompt_tokens": -1000000000, "completion_tokens": 1}'),
    "array": b"[1, 2, 3]",
    "truncated": _sound()[:40],
}
"""200 completions Turnout must not pass on, price or cache: each is a 502 `upstream_error`."""


def _event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def _usage_chunk(usage: bytes) -> bytes:
    head = b'{"id":"chatcmpl-hostile","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    return _event(head + b'"choices":[],"usage":' + usage + b"}")


_GOOD_USAGE = _usage_chunk(b'{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}')
_DONE = b"data: [DONE]\n\n"
STREAMS: dict[str, tuple[bytes, bool]] = {
    "stream-deep": (_chunk("Hello") + _event(b'{"x_hostile":' + nested(5_000) + b',"choices":[]}') + _DONE, True),
    "stream-1e400": (_chunk("Hello") + _event(b'{"choices":[],"x_hostile":1e400,"usage":null}') + _DONE, True),
    "stream-invalid-utf8": (_chunk("Hello") + _chunk("caf").replace(b"caf", b"caf\xe9") + _DONE, True),
    "stream-choices-abc": (_chunk("Hello") + _event(b'{"choices":"abc","usage":null}') + _DONE, True),
    "stream-delta-abc": (_chunk("Hello") + _event(b'{"choices":[{"index":0,"delta":"abc"}]}') + _DONE, True),
    "stream-usage-huge": (_chunk("Hello") + _usage_chunk(b'{"prompt_tokens":1' + b"0" * 30 + b"}") + _DONE, True),
    "stream-usage-negative": (_chunk("Hello") + _usage_chunk(b'{"prompt_tokens":-1000000000}') + _DONE, True),
    "stream-usage-deep": (_chunk("Hello") + _usage_chunk(b'{"x":' + nested(5_000) + b"}") + _DONE, True),
    "stream-first-deep": (_event(b'{"x_hostile":' + nested(5_000) + b"}") + _chunk("Hello") + _DONE, False),
    "stream-ok": (_chunk("Hello") + _chunk(" there.") + _GOOD_USAGE + _DONE, True),
}
"""200 streams, and whether a first event reaches the client before the hostile one (False: it is first)."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `received` instead."""

    def _record(self) -> str:
        authorization = self.headers.get("Authorization")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.upstream.received.append(Received(self.command, self.path, authorization, body))
        return _key(authorization)

    def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        key = self._record()
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/v1/models/"):
            model = urllib.parse.unquote(path.removeprefix("/v1/models/"))
            body = {"id": model, "object": "model", "created": 0, "owned_by": "hostile"}
        else:
            body = {"object": "list", "path": self.path, "authorization": key}
        self._send(200, json.dumps(body).encode())

    def do_POST(self) -> None:
        key = self._record()
        mode = self.headers.get("x-hostile", "echo")
        forms = echoes(key)
        if mode in ANSWERS:
            self._send(200, ANSWERS[mode])
        elif mode in STREAMS:
            streamed = b'"stream":true' in self.server.upstream.received[-1].body.replace(b" ", b"")
            self._send(200, *((STREAMS[mode][0], "text/event-stream") if streamed else (_sound(),)))
        elif mode in ("400", "422", "429"):
            error = {
                "message": f"Bad key {forms['raw']} (as {forms['percent']})",
                "type": "invalid_request_error",
                "param": forms["percent"],
                "code": forms["raw"],
            }
            # json.dumps never escapes "/": write the escaped form into the text by hand, as some servers send it.
            body = json.dumps({"error": error}).replace(json.dumps(forms["raw"])[1:-1], forms["json-slash"], 1)
            extra = {"retry_after": key} if mode == "429" else {}
            self._send(int(mode), body.encode(), **extra)
        elif mode == "500":
            self._send(500, ("x" * 490 + key).encode(), "text/plain")
        elif mode in ("stream-error", "stream-echo"):
            event = {"error": {"message": f"upstream exploded with {key}", "type": "server_error", "code": key}}
            last = b"data: " + json.dumps(event).encode() + b"\n\n" if mode == "stream-error" else _chunk(key)
            done = b"" if mode == "stream-error" else b"data: [DONE]\n\n"
            self._send(200, _chunk("Hello") + last + done, "text/event-stream")
        else:  # with `/` escaped, as JSON allows
            body = json.dumps(_completion(f"your key is {key}")).replace(key, forms["json-slash"])
            self._send(200, body.encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream: HostileUpstream


@contextlib.contextmanager
def hostile_upstream() -> Iterator[HostileUpstream]:
    """Run the hostile upstream on a free loopback port for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    upstream = HostileUpstream(server)
    server.upstream = upstream
    thread = threading.Thread(target=server.serve_forever, name="hostile-upstream", daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
