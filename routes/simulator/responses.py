"""The simulated Responses API: `POST /v1/responses` (whole or as typed events), and the stored responses.

It answers as OpenAI does: a `Response` object (`resp_` id, a `message` item of `output_text`, or a
`function_call` item when the request offers function tools, and `usage` in the Responses' shape); a
stream is the typed events (`event: response.created` ... `response.output_text.delta` ...
`response.completed`, each with its `sequence_number`, no `[DONE]`). The `x-simulated-*` headers work as
for chat (`routes.simulator.limits`): `midstream` sends an `error` event after two events.

A response is kept in memory (the last `KEEP_RESPONSES`) unless `store` is false, so that
`GET /v1/responses/{id}`, `DELETE`, `GET .../input_items` and `POST .../cancel` find it, and a
`previous_response_id` must name one (else a 404, as OpenAI answers). A `background` request is answered
at once with status `queued`; it completes after the simulated latency unless it is cancelled first.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import decode_json_object
from routes.simulator.answers import formatted_pieces
from routes.simulator.common import CONFIG, error_response, json_response, read_body, record_call
from routes.simulator.limits import SimulatorRejectedError, chunk_count, fault_of, reported_usage, wait_ms

__all__ = ["KEEP_RESPONSES", "MAX_INPUT_ITEMS", "SimulatedResponse", "SimulatedResponses"]

KEEP_RESPONSES = 1000
"""Stored responses kept (the oldest forgotten first)."""
MAX_INPUT_ITEMS = 10_000
"""Items of `input` one request may hold (like chat's `messages`)."""
_WORDS = ("This", "is", "a", "simulated", "answer", "from", "the", "Turnout", "test", "upstream", ",", "written")
PREVIOUS = "previous_response_id"
_ECHOED = ("instructions", "max_output_tokens", "metadata", "previous_response_id", "tools", "tool_choice")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _event(data: dict[str, Any]) -> bytes:
    kind: str = data["type"]
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _input_items(value: Any) -> list[dict[str, Any]]:
    """`input` as the stored items `input_items` lists (a string is one user message)."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items = []
    for item in value:
        stored = {"id": _id("msg"), "type": "message", **item}
        if stored["type"] == "message":
            content = stored.get("content")
            if isinstance(content, str):
                stored["content"] = [{"type": "input_text", "text": content}]
            stored.setdefault("status", "completed")
        items.append(stored)
    return items


def _function(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function tool to call: the first one offered, unless `tool_choice` is none or a tool just answered."""
    tools = [tool for tool in body.get("tools") or () if isinstance(tool, dict) and tool.get("type") == "function"]
    inputs = body.get("input")
    last = inputs[-1] if isinstance(inputs, list) and inputs else {}
    if not tools or body.get("tool_choice") == "none" or last.get("type") == "function_call_output":
        return None
    return tools[0]


def _echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as a response lists it: a function's `strict` and `description` filled in, as OpenAI does."""
    if tool.get("type") != "function":
        return tool
    return {"description": None, "strict": True, **tool, "parameters": tool.get("parameters") or {}}


def _arguments(function: dict[str, Any]) -> str:
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    samples = {"string": "simulated", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    required = parameters.get("required") or []
    values = {name: samples.get(str((properties.get(name) or {}).get("type"))) for name in required}
    return msgspec.json.encode(values).decode()


def _checked(raw: bytes) -> dict[str, Any]:
    """A Responses request as OpenAI checks the parts the simulator reads.

    Raises:
        SimulatorRejectedError: not JSON, no `model`, an `input` that is neither a string nor items.
    """
    try:
        body = decode_json_object(raw)
    except InvalidRequestError as exc:
        raise SimulatorRejectedError.of(exc) from exc
    if not isinstance(body.get("model"), str):
        raise SimulatorRejectedError(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    inputs = body.get("input", "")
    if isinstance(inputs, list):
        if len(inputs) > MAX_INPUT_ITEMS:
            raise SimulatorRejectedError(f"Invalid 'input': at most {MAX_INPUT_ITEMS} items.", param="input")
        if not all(isinstance(item, dict) for item in inputs):
            raise SimulatorRejectedError("Invalid 'input': expected a string or an array of items.", param="input")
    elif not isinstance(inputs, str):
        raise SimulatorRejectedError("Invalid 'input': expected a string or an array of items.", param="input")
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)):
        raise SimulatorRejectedError("Invalid 'tools': expected an array of tools.", param="tools")
    function = _function(body)
    if function is not None and not isinstance(function.get("name"), str):
        raise SimulatorRejectedError("Missing required parameter: 'tools[0].name'.", param="tools[0].name")
    if function is not None and not isinstance(function.get("parameters") or {}, dict):
        raise SimulatorRejectedError("Invalid 'tools[0].parameters': expected an object.", param="tools[0].parameters")
    return body


@dataclass(slots=True)
class _Stored:
    response: dict[str, Any]
    items: list[dict[str, Any]]
    task: asyncio.Task[None] | None = field(default=None)


class SimulatedResponses:
    """The handlers of `/v1/responses`; the stored responses live here (one per simulator app)."""

    def __init__(self) -> None:
        self._stored: OrderedDict[str, _Stored] = OrderedDict()

    def _keep(self, response: dict[str, Any], items: list[dict[str, Any]]) -> _Stored:
        stored = self._stored[response["id"]] = _Stored(response, items)
        while len(self._stored) > KEEP_RESPONSES:
            _, old = self._stored.popitem(last=False)
            if old.task is not None:
                old.task.cancel()
        return stored

    async def create(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/responses`."""
        raw = await read_body(request)
        body = _checked(raw)
        config, headers = request.app[CONFIG], request.headers
        latency = wait_ms(headers, "x-simulated-latency-ms", config.latency_ms) / 1000
        interval = wait_ms(headers, "x-simulated-chunk-interval-ms", config.chunk_interval_ms) / 1000
        chunks = chunk_count(headers, config.chunks, 1)
        fault = fault_of(headers, body["model"])
        record = record_call(request, raw, body)
        if (unknown := self._unknown_previous(body)) is not None:
            record["outcome"] = "fault"
            raise unknown
        try:
            if fault == "timeout":
                await asyncio.sleep(3600)
            status = fault.removeprefix("text-")
            if status.isdigit():
                await asyncio.sleep(latency)
                record["outcome"] = "fault"
                return error_response(int(status), fault)
            answer = SimulatedResponse(body, chunks, reported_usage(headers))
            if body.get("background"):
                return self._background(answer, latency, record)
            if latency:
                await asyncio.sleep(latency)
            if body.get("stream"):
                return await self._stream(request, answer, interval, fault, record)
            record["outcome"] = "completed"
            return json_response(self._finished(answer))
        except asyncio.CancelledError:
            record["outcome"] = "cancelled"
            record["cancelled_at"] = time.time()
            raise

    def _unknown_previous(self, body: dict[str, Any]) -> SimulatorRejectedError | None:
        """The 404 for a `previous_response_id` that names no response kept, as OpenAI answers it."""
        previous = body.get(PREVIOUS)
        if previous is None or previous in self._stored:
            return None
        return SimulatorRejectedError(f"Previous response with id '{previous}' not found.", status=404, param=PREVIOUS)

    def _finished(self, answer: SimulatedResponse) -> dict[str, Any]:
        """The completed response, kept unless its request said `store: false`."""
        done = answer.finished()
        if answer.stored:
            self._keep(done, answer.items)
        return done

    def batch_line(self, raw: bytes, chunks: int) -> dict[str, Any]:
        """A batch line's `Response`: checked, answered and kept as `create` does, whole and without faults."""
        body = _checked(raw)
        if (unknown := self._unknown_previous(body)) is not None:
            raise unknown
        return self._finished(SimulatedResponse(body, chunks))

    def _background(self, answer: SimulatedResponse, latency: float, record: dict[str, Any]) -> web.Response:
        queued = answer.response(status="queued")
        stored = self._keep(queued, answer.items)

        async def finish() -> None:
            await asyncio.sleep(latency)
            stored.response = answer.finished()

        stored.task = asyncio.get_running_loop().create_task(finish())
        record["outcome"] = "completed"
        return json_response(queued)

    async def _stream(
        self, request: web.Request, answer: SimulatedResponse, interval: float, fault: str, record: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        events = answer.events()
        if fault in ("midstream", "disconnect"):
            record["outcome"] = "fault"
            await response.write(b"".join(events[:2]))
            if fault == "disconnect" and request.transport is not None:
                request.transport.close()
                return response
            error = {"type": "error", "code": "server_error", "message": "Simulated mid-stream failure."}
            await response.write(_event({**error, "param": None, "sequence_number": 2}))
            return response
        if interval:
            for sent, event in enumerate(events):
                if sent:
                    await asyncio.sleep(interval)
                await response.write(event)
        else:
            await response.write(b"".join(events))
        self._finished(answer)
        await response.write_eof()
        record["outcome"] = "completed"
        return response

    def _find(self, request: web.Request) -> _Stored:
        response_id = request.match_info["response_id"]
        stored = self._stored.get(response_id)
        if stored is None:
            raise SimulatorRejectedError(f"Response with id '{response_id}' not found.", status=404)
        return stored

    async def retrieve(self, request: web.Request) -> web.Response:
        """`GET /v1/responses/{id}`."""
        return json_response(self._find(request).response)

    async def delete(self, request: web.Request) -> web.Response:
        """`DELETE /v1/responses/{id}`."""
        found = self._find(request)
        response_id = found.response["id"]
        if found.task is not None:
            found.task.cancel()
        del self._stored[response_id]
        return json_response({"id": response_id, "object": "response", "deleted": True})

    async def input_items(self, request: web.Request) -> web.Response:
        """`GET /v1/responses/{id}/input_items` (`order`, default `desc`; `limit`, 1-100; `after`)."""
        found = self._find(request)
        query = request.query
        order = query.get("order", "desc")
        limit = query.get("limit", "20")
        if order not in ("asc", "desc") or not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise SimulatorRejectedError("Invalid 'order' or 'limit' (asc or desc; 1 to 100).", param="limit")
        items = found.items if order == "asc" else found.items[::-1]
        after = query.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[: int(limit)]
        first, last = (page[0]["id"], page[-1]["id"]) if page else ("", "")
        listed = {"object": "list", "data": page, "first_id": first, "last_id": last}
        return json_response({**listed, "has_more": len(items) > len(page)})

    async def cancel(self, request: web.Request) -> web.Response:
        """`POST /v1/responses/{id}/cancel`: background responses only, as OpenAI."""
        found = self._find(request)
        if not found.response.get("background"):
            raise SimulatorRejectedError("Only responses created with background=true can be cancelled.")
        if found.task is not None and not found.task.done():
            found.task.cancel()
            found.response = {**found.response, "status": "cancelled"}
        return json_response(found.response)


class SimulatedResponse:
    """One simulated response, in every form it is sent in."""

    def __init__(self, body: dict[str, Any], chunks: int, reported: dict[str, Any] | None = None) -> None:
        self.body, self.reported = body, reported  # `reported`: the usage `x-simulated-usage` gives
        self.id, self.created = _id("resp"), int(time.time())
        self.function = _function(body)
        self.item_id = _id("fc" if self.function else "msg")
        self.call_id = "call_" + secrets.token_hex(12)
        self.items = _input_items(body.get("input", ""))
        words = [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(chunks)]
        text = body.get("text")
        self.words = formatted_pieces(text.get("format") if isinstance(text, dict) else None, self.items, words)
        self.stored = body.get("store") is not False

    def response(self, *, status: str, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The `Response` object with `status` and `output` (its usage only once completed)."""
        body = self.body
        response: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": bool(body.get("background")),
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": None,
            "incomplete_details": None,
            "model": body["model"],
            "output": output or [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default",
            "store": self.stored,
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
        }
        if status == "completed":
            response["usage"] = self.usage()
        response.update((name, body.get(name)) for name in _ECHOED)
        response["metadata"] = response["metadata"] or {}
        response["tools"] = [_echoed_tool(tool) for tool in response["tools"] or ()]
        response["tool_choice"] = response["tool_choice"] or "auto"
        return response

    def usage(self) -> dict[str, Any]:
        """Token counts in the Responses' shape: a rough input estimate, one output token per word (or `reported`)."""
        if self.reported is not None:
            return self.reported
        texts = [self.body.get("instructions") or "", *(_text_of(item.get("content")) for item in self.items)]
        prompt = sum(4 + len(str(text)) // 4 for text in texts)
        output = len(self.words)
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        }

    def _item(self, *, done: bool) -> dict[str, Any]:
        status = "completed" if done else "in_progress"
        if self.function is not None:
            arguments = _arguments(self.function) if done else ""
            item = {"id": self.item_id, "type": "function_call", "status": status, "arguments": arguments}
            return {**item, "call_id": self.call_id, "name": self.function["name"]}
        content = [self._part(done=True)] if done else []
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def _part(self, *, done: bool) -> dict[str, Any]:
        return {"type": "output_text", "text": "".join(self.words) if done else "", "annotations": [], "logprobs": []}

    def finished(self) -> dict[str, Any]:
        """The completed `Response`."""
        return self.response(status="completed", output=[self._item(done=True)])

    def events(self) -> list[bytes]:
        """The typed SSE events of the stream, `response.completed` last."""
        ids = {"item_id": self.item_id, "output_index": 0}
        typed: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.response(status="in_progress")},
            {"type": "response.in_progress", "response": self.response(status="in_progress")},
            {"type": "response.output_item.added", "output_index": 0, "item": self._item(done=False)},
        ]
        if self.function is not None:
            arguments = _arguments(self.function)
            pieces = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
            typed += [{"type": "response.function_call_arguments.delta", **ids, "delta": p} for p in pieces]
            name = self.function["name"]
            typed.append({"type": "response.function_call_arguments.done", **ids, "name": name, "arguments": arguments})
        else:
            text = {**ids, "content_index": 0}
            typed.append({"type": "response.content_part.added", **text, "part": self._part(done=False)})
            typed += [{"type": "response.output_text.delta", **text, "delta": w, "logprobs": []} for w in self.words]
            typed.append({"type": "response.output_text.done", **text, "text": "".join(self.words), "logprobs": []})
            typed.append({"type": "response.content_part.done", **text, "part": self._part(done=True)})
        typed.append({"type": "response.output_item.done", "output_index": 0, "item": self._item(done=True)})
        typed.append({"type": "response.completed", "response": self.finished()})
        return [_event({**event, "sequence_number": number}) for number, event in enumerate(typed)]
