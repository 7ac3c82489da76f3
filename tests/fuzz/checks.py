"""What every response of Turnout must be, whatever was sent: checks that return problems instead of raising.

A fuzz run sends hundreds of requests and reports every distinct problem it saw, so the checks return
a list of `Problem`s (empty when the response is right) rather than failing at the first one:

- no 5xx (the simulated upstream never fails unless a request asks it to, so a 5xx is Turnout's);
- every error is OpenAI-format JSON, `{"error": {"message", "type", "param", "code"}}`, all four keys,
  `param` and `code` a string or null, and matches the spec's `ErrorResponse`;
- every success matches the spec's response schema (`tests.openapi`, the `nullable` rewrite included),
  a stream chunk by chunk up to one final `[DONE]`;
- the headers are sane: one `content-type`, a `content-length` that is the body's, `x-request-id`
  echoed, the decision headers on chat answers, `allow` on a 405, `retry-after` on a 429, and the
  upstream key nowhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from proxy.wire.sse import DONE
from tests.e2e.conftest import SERVER_KEY
from tests.openapi import SchemaMismatchError, validate
from tests.sse_client import SSEDecoder

__all__ = ["Problem", "Reply", "error_fields", "error_problems", "header_problems", "problems", "success_problems"]

_ERROR_KEYS = {"message", "type", "param", "code"}
_SINGLE = ("content-type", "content-length", "x-request-id")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a response: `kind` groups alike problems, `detail` says what exactly."""

    kind: str
    detail: str = ""


@dataclass(frozen=True)
class Reply:
    """A response as it came off the wire: status, headers (lower-case names, repeats kept) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def of(cls, response: httpx.Response) -> Reply:
        headers = tuple((name.lower(), value) for name, value in response.headers.multi_items())
        return cls(status=response.status_code, headers=headers, body=response.content)

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def header(self, name: str) -> str | None:
        values = self.values(name)
        return values[0] if values else None

    @property
    def media_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()


def error_fields(reply: Reply) -> str:
    """`type=… param=…` of an OpenAI error body, to tell apart errors of one status (empty if it is none)."""
    try:
        error = json.loads(reply.body)["error"]
        return f"type={error.get('type')} param={error.get('param')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


BEYOND_SCHEMA = ("max_tokens", "max_completion_tokens", "logit_bias.", "input", "prompt", "dimensions", "best_of")
"""Parameters whose bounds OpenAI's API enforces but its schema does not state (`proxy/wire/parameters.py`):
`max_tokens` / `max_completion_tokens` below 1, `logit_bias` values outside -100..100, an empty `input` (or
array of prompts or tokens), `dimensions` beyond the largest model's (3,072), `best_of` below `n`."""
_BOUND_CODES = frozenset({"integer_below_min_value", "integer_above_max_value", "empty_string", "empty_array"})


def bound_beyond_schema(reply: Reply) -> bool:
    """Whether `reply` is OpenAI's 400 for one of the `BEYOND_SCHEMA` bounds: a spec-valid request it may refuse."""
    try:
        error = json.loads(reply.body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    param = error.get("param") if isinstance(error, dict) else None
    return (
        reply.status == 400
        and isinstance(param, str)
        and param.startswith(BEYOND_SCHEMA)
        and error.get("code") in _BOUND_CODES
    )


def _json(reply: Reply) -> tuple[Any, Problem | None]:
    try:
        return json.loads(reply.body), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, Problem("body is not JSON", f"{exc}: {reply.body[:120]!r}")


def _schema(name: str, instance: object) -> Problem | None:
    try:
        validate(name, instance)
    except SchemaMismatchError as exc:
        return Problem(f"does not match {name}", str(exc).splitlines()[1].strip() if exc.errors else str(exc))
    return None


def error_problems(reply: Reply) -> list[Problem]:
    """What is wrong with an error response, judged as OpenAI's SDKs read one."""
    if reply.media_type != "application/json":
        return [Problem(f"error is {reply.media_type or 'untyped'}, not JSON", repr(reply.body[:120]))]
    body, problem = _json(reply)
    if problem is not None:
        return [problem]
    mismatch = _schema("ErrorResponse", body)
    if mismatch is not None:
        return [mismatch]
    error = body["error"]
    found: list[Problem] = []
    if set(error) != _ERROR_KEYS:
        found.append(Problem("error keys are not message, type, param, code", repr(sorted(error))))
    if not error["message"] or not error["type"]:
        found.append(Problem("error message or type is empty", repr(error)))
    return found


def _stream_problems(reply: Reply) -> list[Problem]:
    decoder = SSEDecoder()
    payloads = decoder.feed(reply.body)
    if decoder.pending:
        return [Problem("stream ends inside an event", repr(reply.body[-120:]))]
    if not payloads or payloads[-1] != DONE or payloads.count(DONE) != 1:
        return [Problem("stream does not end with one [DONE]", repr(payloads[-2:]))]
    for payload in payloads[:-1]:
        chunk = json.loads(payload)
        if "error" in chunk:
            return [Problem("stream carries an error event", payload.decode("utf-8", "replace")[:200])]
        mismatch = _schema("CreateChatCompletionStreamResponse", chunk)
        if mismatch is not None:
            return [mismatch]
    return []


def success_problems(reply: Reply, schema_name: str, *, stream: bool = False) -> list[Problem]:
    """What is wrong with a 2xx answer that should match `schema_name` (or be a stream of its chunks)."""
    expected = "text/event-stream" if stream else "application/json"
    if reply.media_type != expected:
        return [Problem(f"{reply.status} is {reply.media_type or 'untyped'}, not {expected}")]
    if stream:
        return _stream_problems(reply)
    body, problem = _json(reply)
    if problem is not None:
        return [problem]
    mismatch = _schema(schema_name, body)
    return [] if mismatch is None else [mismatch]


def header_problems(reply: Reply, request_id: str | None) -> list[Problem]:
    """What is wrong with the headers of any response."""
    found = [
        Problem(f"{name} appears {len(reply.values(name))} times") for name in _SINGLE if len(reply.values(name)) > 1
    ]
    length = reply.header("content-length")
    if length is not None and length != str(len(reply.body)):
        found.append(Problem("content-length is not the body's length", f"{length} for {len(reply.body)} bytes"))
    if length is not None and reply.header("transfer-encoding") is not None:
        found.append(Problem("content-length together with transfer-encoding"))
    if reply.body and reply.header("content-type") is None:
        found.append(Problem("a body without content-type"))
    if request_id is not None and reply.header("x-request-id") != request_id:
        found.append(Problem("x-request-id is not echoed", f"{reply.header('x-request-id')!r}"))
    if reply.status == 405 and reply.header("allow") is None:
        found.append(Problem("405 without allow"))
    if reply.status == 429 and reply.header("retry-after") is None:
        found.append(Problem("429 without retry-after"))
    if any(SERVER_KEY in value for _, value in reply.headers) or SERVER_KEY.encode() in reply.body:
        found.append(Problem("the upstream key reached the client"))
    return found


def problems(
    reply: Reply, *, request_id: str | None, schema_name: str | None, stream: bool = False, chat: bool = False
) -> list[Problem]:
    """Every problem of one response: status, headers, then the error or success body.

    Args:
        reply: The response.
        request_id: The `x-request-id` the request sent, which must come back (None: not checked).
        schema_name: The spec schema a 2xx body must match (None: any 2xx body is a problem).
        stream: Whether a 2xx must be an SSE stream of `CreateChatCompletionStreamResponse` chunks.
        chat: Whether a 2xx is a chat answer, which carries `x-turnout-route` and `x-turnout-rule`.

    Returns:
        The problems found, empty when the response is right.
    """
    found = header_problems(reply, request_id)
    if reply.status >= 500:
        kind = f"status {reply.status} {error_fields(reply)}".strip()
        found.append(Problem(kind, reply.body[:200].decode("utf-8", "replace")))
    if reply.status >= 400:
        return found + error_problems(reply)
    if not 200 <= reply.status < 300:
        return [*found, Problem(f"unexpected status {reply.status}")]
    if schema_name is None:
        return [*found, Problem(f"unexpected success {reply.status}")]
    if chat and not (reply.header("x-turnout-route") and reply.header("x-turnout-rule")):
        found.append(Problem("chat answer without x-turnout-route and x-turnout-rule"))
    return found + success_problems(reply, schema_name, stream=stream)
