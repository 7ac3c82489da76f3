"""A hostile OpenAI-compatible upstream on a loopback port: it records every request and echoes the credential.

A stdlib `ThreadingHTTPServer` on a daemon thread of the test process, so that a test can read what it
received without any protocol of its own. `POST /v1/chat/completions` behaves by the `x-hostile` header:

- `400`, `422`, `429`: an OpenAI-format error whose `message`, `param` and `code` carry the key it was
  sent (raw, percent-encoded and JSON-escaped with `\\/`), and, on 429, a `retry-after` that is the key;
- `500`: a plain-text error body with the key straddling byte 500 (where a body is cut short);
- `stream-error`: one content chunk, then an SSE error event that echoes the key;
- `echo`, `stream-echo`: a normal answer (or stream) whose content is the key (with `/` as `\\/` in `echo`).

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


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `received` instead."""

    def _record(self) -> str:
        authorization = self.headers.get("Authorization")
        self.server.upstream.received.append(Received(self.command, self.path, authorization))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
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
        if mode in ("400", "422", "429"):
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
