"""What every endpoint of the simulated upstream shares: its settings, JSON and error answers, call records.

Each endpoint's handlers (`server`, and the modules beside it) read the server's `SimulatorConfig` from
`request.app[CONFIG]`, answer OpenAI-format errors with `error_response`, read bodies with `read_body`
(bounded), and record every call with `record_call` so a test can read it back at
`GET /_simulator/calls/{x-request-id}`.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from routes.simulator.limits import MAX_BODY_BYTES, RECORD_BYTES, SimulatorRejectedError

__all__ = [
    "CALLS",
    "CONFIG",
    "SimulatorConfig",
    "error_response",
    "json_response",
    "read_body",
    "record_call",
    "rejections",
]

_KEEP_CALLS = 1000
CALLS = web.AppKey[OrderedDict[str, dict[str, Any]]]("calls")
"""The last calls, by `x-request-id`."""
CONFIG = web.AppKey["SimulatorConfig"]("config")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Server-wide defaults; each can be overridden per request by its `x-simulated-*` header."""

    latency_ms: float = 0.0
    chunk_interval_ms: float = 0.0
    chunks: int = 12


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """`body` as a JSON response."""
    return web.Response(body=msgspec.json.encode(body), status=status, headers=headers, content_type="application/json")


def error_response(status: int, fault: str) -> web.Response:
    """The error OpenAI answers with `status` (`fault` `text-<status>`: a plain-text body instead)."""
    if fault.startswith("text-"):
        return web.Response(status=status, text="upstream exploded", content_type="text/plain")
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error", 429: "requests"}
    codes = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
    messages = {401: "Incorrect API key provided: sk-simu*********************1234.", 429: "Rate limit reached."}
    detail = {
        "message": messages.get(status, f"Simulated error {status}."),
        "type": kinds.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": "messages" if status in (400, 422) else None,
        "code": codes.get(status),
    }
    return json_response({"error": detail}, status, {"retry-after": "1"} if status == 429 else None)


def _rejected(rejection: SimulatorRejectedError) -> web.Response:
    """The OpenAI-format error for a request the simulator refuses."""
    detail = {"message": rejection.message, "type": "invalid_request_error", "param": rejection.param}
    return json_response({"error": {**detail, "code": rejection.code}}, rejection.status)


async def read_body(request: web.Request) -> bytes:
    """The whole body (at most `MAX_BODY_BYTES`: a 413 beyond)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        message = f"The request body is larger than the simulator's limit of {MAX_BODY_BYTES} bytes."
        raise SimulatorRejectedError(message, status=413, code="request_too_large") from exc


@web.middleware
async def rejections(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every `SimulatorRejectedError` a handler raises, answered as OpenAI answers a bad request.

    A path or method the simulator does not have is OpenAI's 404 (`Invalid URL (GET /v1/...)`), recorded
    like any call (its outcome `not_found`), so that a test sees what reached it.
    """
    try:
        response: web.StreamResponse = await handler(request)
    except SimulatorRejectedError as rejection:
        return _rejected(rejection)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        record_call(request, b"", {})["outcome"] = "not_found"
        message = f"Invalid URL ({request.method} {request.path})"
        return json_response(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}, 404
        )
    return response


def record_call(request: web.Request, raw: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """Record a call under its `x-request-id` (the models of earlier calls with that id kept): the record, to update."""
    calls = request.app[CALLS]
    kept = len(raw) <= RECORD_BYTES  # a thousand records of a large body each would not be a bound
    record: dict[str, Any] = {
        "path": request.path,
        "headers": dict(request.headers),
        "raw": raw.decode("utf-8", "replace") if kept else None,
        "raw_bytes": len(raw),
        "body": body if kept else None,
        "outcome": "started",
    }
    request_id = request.headers.get("x-request-id") or secrets.token_hex(8)
    earlier = calls.get(request_id)
    record["models"] = [*(earlier["models"] if earlier else []), str(body.get("model"))]  # retries, fallbacks
    calls[request_id] = record
    while len(calls) > _KEEP_CALLS:
        calls.popitem(last=False)
    return record
