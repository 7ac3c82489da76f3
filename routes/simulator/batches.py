"""The simulator's Batch API: create, retrieve, list, cancel; a life cycle, and an output file it answers itself.

A batch names an `input_file_id` (a file the simulator holds, one JSON request a line: `custom_id`,
`method: POST`, `url` the batch's `endpoint`, `body`), an `endpoint` the simulator can answer in a batch
and `completion_window: 24h`. It goes `validating` → `in_progress` → `finalizing` → `completed`, one step
each (`routes.simulator.lifecycle`); an input with a bad line goes `validating` → `failed`, with the
lines' `errors`. On completion every line is answered by the simulator's own logic for its endpoint
(`ANSWERERS`: chat and embeddings are registered by the server, other endpoints register theirs), and
the answers are written, one JSON line per input line with its `custom_id`, to the `output_file_id`
(`batch_output`); lines the endpoint refuses go to the `error_file_id`. `request_counts` and `usage` say
what was answered (`usage` as `x-simulated-usage` gave it at creation, if it did). A cancelled batch is
`cancelling` for one step, then `cancelled`.

Bounds: OpenAI's, an input of at most 50,000 lines and 200 MB.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import decode_json_object
from routes.simulator.common import read_body
from routes.simulator.faults import simulated, with_faults
from routes.simulator.files import FILES, page
from routes.simulator.lifecycle import CLOCK, Lifecycle, SimulatorClock, now, step_seconds
from routes.simulator.limits import SimulatorRejectedError, reported_usage

__all__ = ["ANSWERERS", "BATCHES", "MAX_INPUT_BYTES", "MAX_INPUT_LINES", "Answerer", "add_batch_routes"]

Answerer = Callable[[bytes], dict[str, Any]]
"""One request's answer body from its raw body (raises `SimulatorRejectedError` for a request it refuses)."""
MAX_INPUT_LINES = 50_000
MAX_INPUT_BYTES = 200 * 1024 * 1024
MAX_BATCHES = 1_000
_RUN = Lifecycle(stages=("validating", "in_progress", "finalizing"), final="completed")
_FAIL = Lifecycle(stages=("validating",), final="failed")
_CANCEL = Lifecycle(stages=("cancelling",), final="cancelled")
_STAMPS = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
}


@dataclass(slots=True)
class _Batch:
    body: dict[str, Any]
    started: float
    step: float
    lines: list[tuple[str, bytes]]
    """Each input line's `custom_id` and raw request body."""
    cancelled: float | None = None
    done: bool = False
    reported: dict[str, Any] | None = None
    """`x-simulated-usage` at creation: the usage to report once done, instead of the lines' sum."""


ANSWERERS = web.AppKey[dict[str, Answerer]]("batch_answerers")
BATCHES = web.AppKey[dict[str, _Batch]]("batches")


def _line_error(number: int, message: str, code: str = "invalid_request") -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": number}


def _parse(content: bytes, endpoint: str) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]]]:
    """An input file's requests (custom id, raw body) and, for the lines that are not valid, their errors."""
    lines: list[tuple[str, bytes]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    rows = [row for row in content.splitlines() if row.strip()]
    if len(rows) > MAX_INPUT_LINES:
        return [], [_line_error(0, f"The input has more than {MAX_INPUT_LINES} requests.", "too_many_requests")]
    for number, row in enumerate(rows, start=1):
        try:
            request = decode_json_object(row)
        except InvalidRequestError:
            errors.append(_line_error(number, "This line is not valid JSON.", "invalid_json_line"))
            continue
        custom_id, body = request.get("custom_id"), request.get("body")
        if not isinstance(custom_id, str) or custom_id in seen:
            errors.append(_line_error(number, "Each line needs a unique string 'custom_id'.", "duplicate_custom_id"))
        elif request.get("method") != "POST" or request.get("url") != endpoint or not isinstance(body, dict):
            errors.append(_line_error(number, f"Each line is a POST to {endpoint} with an object 'body'."))
        else:
            seen.add(custom_id)
            lines.append((custom_id, msgspec.json.encode(body)))
    return lines, errors[:1000]


def _checked(request: web.Request, raw: bytes) -> dict[str, Any]:
    try:
        body = decode_json_object(raw)
    except InvalidRequestError as exc:
        raise SimulatorRejectedError.of(exc) from exc
    endpoint, answerers = body.get("endpoint"), request.app[ANSWERERS]
    if not isinstance(endpoint, str) or endpoint not in answerers:
        known = ", ".join(sorted(answerers))
        raise SimulatorRejectedError(f"Invalid 'endpoint': expected one of {known}.", param="endpoint")
    if body.get("completion_window") != "24h":
        raise SimulatorRejectedError("Invalid 'completion_window': expected '24h'.", param="completion_window")
    if not isinstance(body.get("input_file_id"), str):
        raise SimulatorRejectedError("Missing required parameter: 'input_file_id'.", param="input_file_id")
    return body


async def _create(request: web.Request) -> web.Response:
    raw = await read_body(request)
    body = _checked(request, raw)
    _, error = await simulated(request, body, raw)
    if error is not None:
        return error
    stored = request.app[FILES].get(body["input_file_id"])
    if stored.size > MAX_INPUT_BYTES:
        raise SimulatorRejectedError(f"The input file is over {MAX_INPUT_BYTES} bytes.", param="input_file_id")
    lines, errors = _parse(stored.content(), body["endpoint"])
    started = now(request.app)
    model = msgspec.json.decode(lines[0][1]).get("model") if lines else None
    described = {
        "id": f"batch_{secrets.token_hex(12)}",
        "object": "batch",
        "endpoint": body["endpoint"],
        "model": model if isinstance(model, str) else None,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": stored.id,
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": int(started),
        "in_progress_at": None,
        "expires_at": int(started) + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0 if errors else len(lines), "completed": 0, "failed": 0},
        "metadata": body.get("metadata"),
    }
    batches = request.app[BATCHES]
    if len(batches) >= MAX_BATCHES:
        batches.pop(next(iter(batches)))
    batch = batches[described["id"]] = _Batch(
        described, started, step_seconds(request.headers), lines, reported=reported_usage(request.headers)
    )
    return web.json_response(_current(request.app, batch))


def _current(app: web.Application, batch: _Batch) -> dict[str, Any]:
    """The batch as it is now, without the fields not set yet (OpenAI's schema has them absent, not null)."""
    return {key: value for key, value in _updated(app, batch).items() if value is not None}


def _updated(app: web.Application, batch: _Batch) -> dict[str, Any]:
    """The batch's status from the clock, its timestamps, its output written when it completes."""
    described, at = batch.body, now(app)
    if batch.cancelled is not None:
        described["status"] = status = _CANCEL.status(batch.cancelled, batch.step, at)
        if status == "cancelled":
            described["cancelled_at"] = _CANCEL.entered(batch.cancelled, batch.step, 1)
        return described
    lifecycle = _FAIL if described["errors"] else _RUN
    reached = lifecycle.reached(batch.started, batch.step, at)
    described["status"] = lifecycle.status(batch.started, batch.step, at)
    for index in range(1, reached + 1):
        stage = lifecycle.stages[index] if index < len(lifecycle.stages) else lifecycle.final
        described[_STAMPS[stage]] = lifecycle.entered(batch.started, batch.step, index)
    if described["status"] == "completed" and not batch.done:
        batch.done = True
        _answer(app, batch)
    return described


def _answer(app: web.Application, batch: _Batch) -> None:
    """Answer every line with the endpoint's logic; write the output (and error) files; count and sum usage."""
    answerer = app[ANSWERERS][batch.body["endpoint"]]
    outputs, failures = [], []
    usage = {"input_tokens": 0, "output_tokens": 0}
    for custom_id, raw in batch.lines:
        line: dict[str, Any] = {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id}
        try:
            answer = answerer(raw)
        except SimulatorRejectedError as rejection:
            error = {"message": rejection.message, "type": "invalid_request_error", "param": rejection.param}
            response = {"status_code": rejection.status, "body": {"error": {**error, "code": rejection.code}}}
            failures.append(
                {**line, "response": {**response, "request_id": f"req_{secrets.token_hex(12)}"}, "error": None}
            )
            continue
        counts = answer.get("usage") or {}
        usage["input_tokens"] += int(counts.get("prompt_tokens") or counts.get("input_tokens") or 0)
        usage["output_tokens"] += int(counts.get("completion_tokens") or counts.get("output_tokens") or 0)
        response = {"status_code": 200, "request_id": f"req_{secrets.token_hex(12)}", "body": answer}
        outputs.append({**line, "response": response, "error": None})
    files, batch_id = app[FILES], batch.body["id"]
    described = batch.body
    described["output_file_id"] = files.put(f"{batch_id}_output.jsonl", "batch_output", _jsonl(outputs)).id
    if failures:
        described["error_file_id"] = files.put(f"{batch_id}_error.jsonl", "batch_output", _jsonl(failures)).id
    described["request_counts"] = {"total": len(batch.lines), "completed": len(outputs), "failed": len(failures)}
    described["usage"] = {
        "input_tokens": usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }
    if batch.reported is not None:
        described["usage"] = batch.reported


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(msgspec.json.encode(row) + b"\n" for row in rows)


def _batch(request: web.Request) -> _Batch:
    batch = request.app[BATCHES].get(request.match_info["batch_id"])
    if batch is None:
        raise SimulatorRejectedError(f"No batch found with id '{request.match_info['batch_id'][:64]}'.", status=404)
    return batch


async def _retrieve(request: web.Request) -> web.Response:
    return web.json_response(_current(request.app, _batch(request)))


async def _list(request: web.Request) -> web.Response:
    batches = [_current(request.app, batch) for batch in request.app[BATCHES].values()]
    return web.json_response(page(request, batches, 20, with_ids=True))


async def _cancel(request: web.Request) -> web.Response:
    batch = _batch(request)
    status = _current(request.app, batch)["status"]
    if status not in ("validating", "in_progress", "finalizing"):
        raise SimulatorRejectedError(f"Cannot cancel a batch with status '{status}'.", status=409)
    batch.cancelled = now(request.app)
    batch.body["cancelling_at"] = int(batch.cancelled)
    return web.json_response(_current(request.app, batch))


def add_batch_routes(app: web.Application, answerers: Mapping[str, Answerer]) -> None:
    """Serve the Batch API from `app` (needs the Files API), answering lines with `answerers` by endpoint.

    Another endpoint's module adds its own with `app[ANSWERERS][path] = answerer` before the app starts.
    """
    app[ANSWERERS] = dict(answerers)
    app[BATCHES] = {}
    app[CLOCK] = app.get(CLOCK) or SimulatorClock()
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/batches", _create)
        app.router.add_get(prefix + "/batches", with_faults(_list))
        app.router.add_get(prefix + "/batches/{batch_id}", with_faults(_retrieve))
        app.router.add_post(prefix + "/batches/{batch_id}/cancel", with_faults(_cancel))
