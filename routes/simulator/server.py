"""A simulated OpenAI upstream (latency, chunking, tool calls, errors) for demos, load tests and CI.

A real HTTP server (aiohttp) that answers the way OpenAI does, under `/v1` and without it:

- `POST /chat/completions`: `chatcmpl-` ids, usage, role/content/finish chunks, the usage chunk when
  asked for; JSON for `response_format` `json_object`, a value valid against the schema for
  `json_schema`; tool calls as `tool_choice` says, in parallel, each with its own id, arguments valid
  against the function's parameters; `logprobs` (`answers`, `tool_calls`, `schema_values`).
- `POST /embeddings`: deterministic vectors: each word of an input is hashed to a few dimensions, so
  texts that share words point the same way (a crude but stable stand-in for meaning), with `usage`
  counting about 1.3 tokens a word. `dimensions` is honoured (default 1536).
- `/files` (`files`), `/fine_tuning/jobs` (`fine_tuning`), `/batches` (`batches`), `POST /moderations`
  (`moderations`): in memory, with life cycles on the simulator's clock (`lifecycle`).
- `GET /models[/{id}]`.

Behaviour is set per server (`SimulatorConfig`) and per request by headers, which Turnout forwards like
any other end-to-end header:

- `x-simulated-latency-ms`: wait before answering (before the first chunk of a stream); every endpoint
  but embeddings and models.
- `x-simulated-chunk-interval-ms`: wait between stream chunks (with none, the whole stream goes out in
  one write, as a burst: the same events, without a syscall each).
- `x-simulated-chunks`: how many content chunks (one word each) the answer has.
- `x-simulated-fault`: `<status>` (an OpenAI-format error, e.g. 429 with `retry-after`, 500),
  `text-<status>` (a plain-text error body), `timeout` (never answer), `midstream` (an SSE error
  event after two chunks), `disconnect` (drop the connection after two chunks; a file download drops
  it after half its content on either); every endpoint but models.
- `x-simulated-fault-for`: apply the fault only to requests for this model (to fail one route of several).
- `x-simulated-differ`: a percent of requests (chosen by a hash of their messages) answered with other words;
  `x-simulated-differ-for`: only for this model (a candidate that disagrees with the reference on a share).
- `x-simulated-reply`: the content to answer, as given (`x-simulated-reply-for`: only for this model), e.g.
  a judge's `VERDICT: TIE`.
- `x-simulated-step-ms`: on a fine-tuning job's or a batch's create call, how long each stage of its
  life cycle lasts (`lifecycle.DEFAULT_STEP_MS` by default).
- `x-simulated-usage`: a JSON usage object to report as given (chat, Responses, embeddings, completions;
  whole or streamed; on a batch's create call, the batch's `usage` once done), so that a test bills exactly
  what a recorded OpenAI answer billed.

`POST /v1/embeddings` answers deterministic vectors: each word of an input is hashed to a few
dimensions, so texts that share words point the same way (a crude but stable stand-in for meaning),
with `usage` counting about 1.3 tokens a word. `dimensions` is honoured (default 1536), token arrays
and `encoding_format: base64` too (`routes.simulator.embeddings`). `POST /v1/completions` answers the
legacy completions (`routes.simulator.completions`).

Every call is recorded by its `x-request-id` and can be read back at `GET /_simulator/calls/{id}`:
what arrived last (headers, body), how it ended (`completed`, `cancelled`, `fault`), and `models`, the
model of every request that carried that id (retries and fallbacks included).

It is no weak point of the tests and demos it serves: a request is checked as Turnout checks it, and
everything it could make the simulator allocate or wait for is bounded (`routes.simulator.limits`, the
files' and batches' own bounds); anything else is an OpenAI-format 4xx (a body over `MAX_BODY_BYTES` a 413).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from proxy.wire.sse import DONE_EVENT, encode_event
from routes.simulator.answers import ID_PLACEHOLDER, Answer, render_completion, render_events
from routes.simulator.batches import Answerer, add_batch_routes
from routes.simulator.common import (
    CALLS,
    CONFIG,
    SimulatorConfig,
    error_response,
    json_response,
    read_body,
    record_call,
    rejections,
)
from routes.simulator.completions import batch_completion, completions
from routes.simulator.embeddings import encoded
from routes.simulator.files import add_file_routes
from routes.simulator.fine_tuning import add_fine_tuning_routes
from routes.simulator.limits import (
    MAX_BODY_BYTES,
    EmbeddingsAsk,
    chat_body,
    chunk_count,
    differs,
    embeddings_ask,
    fault_of,
    reply_of,
    reported_usage,
    wait_ms,
)
from routes.simulator.moderations import add_moderation_routes, moderation_answer
from routes.simulator.responses import SimulatedResponses

__all__ = ["SimulatorConfig", "SimulatorServer", "build_simulator", "run_simulator", "start_simulator"]

_MODELS = (
    "gpt-4.1",
    "gpt-4.1-mini",
    "ft:gpt-4.1-mini-2025-04-14:acme::8Xyz",
    "gpt-4",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo",
    "ft:gpt-3.5-turbo-0613:acme::8Xyz",
)


class _Simulator:
    """The request handlers; per-call records live in the app under `CALLS`."""

    def __init__(self) -> None:
        # Rendered completions by what shapes them, with a placeholder id: a load test's requests are
        # alike, and the simulator must not be what limits a benchmark.
        self._rendered: dict[tuple[Any, ...], bytes] = {}

    def _completion_body(self, answer: Answer) -> bytes:
        """The body of `answer`, from a rendering kept with a placeholder id when its like was answered before.

        Only an answer whose one varying part is its `chatcmpl-` id, and whose content depends on nothing but
        the key, is kept: tool calls have ids of their own (unique per call), and JSON content depends on a
        schema (in `response_format` or in the prompt), so those are rendered afresh every time.
        """
        body = answer.body
        if (
            answer.functions()
            or body.get("response_format")
            or answer.reported is not None
            or answer.differs
            or answer.reply
        ):
            return msgspec.json.encode(render_completion(answer))
        shape = (body.get("logprobs"), body.get("top_logprobs"))
        key = (answer.model, answer.chunks, body.get("n"), answer.created, answer.usage()["prompt_tokens"], shape)
        rendered = self._rendered.get(key)
        if rendered is None:
            if len(self._rendered) > 256:
                self._rendered.clear()
            placeholder = Answer(body=answer.body, latency=0, interval=0, chunks=answer.chunks, fault="")
            placeholder.id, placeholder.created = ID_PLACEHOLDER.decode(), answer.created
            rendered = self._rendered[key] = msgspec.json.encode(render_completion(placeholder))
        return rendered.replace(ID_PLACEHOLDER, answer.id.encode(), 1)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await read_body(request)
        checked, body = chat_body(raw)
        config, headers = request.app[CONFIG], request.headers
        answer = Answer(
            body=body,
            latency=wait_ms(headers, "x-simulated-latency-ms", config.latency_ms) / 1000,
            interval=wait_ms(headers, "x-simulated-chunk-interval-ms", config.chunk_interval_ms) / 1000,
            chunks=chunk_count(headers, config.chunks, checked.view.n or 1),
            fault=fault_of(headers, checked.view.model),
            reported=reported_usage(headers),
            differs=differs(headers, checked.view.model, body.get("messages")),
            reply=reply_of(headers, checked.view.model),
        )
        record = record_call(request, raw, body)
        try:
            if answer.fault == "timeout":
                await asyncio.sleep(3600)
            if answer.latency:
                await asyncio.sleep(answer.latency)
            status = answer.fault.removeprefix("text-")
            if status.isdigit():
                record["outcome"] = "fault"
                return error_response(int(status), answer.fault)
            if body.get("stream"):
                return await self._stream(request, answer, record)
            record["outcome"] = "completed"
            return web.Response(body=self._completion_body(answer), content_type="application/json")
        except asyncio.CancelledError:
            record["outcome"] = "cancelled"
            record["cancelled_at"] = time.time()
            raise

    async def _stream(self, request: web.Request, answer: Answer, record: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        events = render_events(answer)
        if answer.fault in ("midstream", "disconnect"):
            record["outcome"] = "fault"
            await response.write(b"".join(events[:2]))
            if answer.fault == "disconnect" and request.transport is not None:
                request.transport.close()
                return response
            error = {"message": "Simulated mid-stream failure.", "type": "server_error", "param": None, "code": None}
            await response.write(encode_event(msgspec.json.encode({"error": error})))
            return response
        if answer.interval:
            for sent, event in enumerate(events):
                if sent and event != DONE_EVENT:
                    await asyncio.sleep(answer.interval)
                await response.write(event)
        else:  # nothing to wait for: the whole stream in one write, the same events as a burst of packets
            await response.write(b"".join(events))
        await response.write_eof()
        record["outcome"] = "completed"
        return response

    @staticmethod
    def _model(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1686935002, "owned_by": "openai"}

    async def embeddings(self, request: web.Request) -> web.Response:
        raw = await read_body(request)
        ask = embeddings_ask(raw)
        record_call(request, raw, ask.values)
        fault = fault_of(request.headers, ask.model)
        if fault.removeprefix("text-").isdigit():
            return error_response(int(fault.removeprefix("text-")), fault)
        return json_response(_embeddings_answer(ask, reported_usage(request.headers)))

    async def models(self, request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [self._model(m) for m in _MODELS]})

    async def model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id not in _MODELS:
            return error_response(404, "")
        return json_response(self._model(model_id))

    async def call(self, request: web.Request) -> web.Response:
        record = request.app[CALLS].get(request.match_info["request_id"])
        if record is None:
            return json_response({"error": "no such call"}, 404)
        return json_response(record)


_WORDS = re.compile(r"\w+")


def _embeddings_answer(ask: EmbeddingsAsk, reported: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `CreateEmbeddingResponse` for an embeddings request."""
    data = [
        {"object": "embedding", "index": index, "embedding": encoded(_hashed_vector(text, ask.dimension), ask.encoding)}
        for index, text in enumerate(ask.texts)
    ]
    tokens = sum(max(1, round(len(text.split()) * 1.3)) for text in ask.texts)
    return {
        "object": "list",
        "data": data,
        "model": ask.model,
        "usage": reported if reported is not None else {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _batch_answerers(config: SimulatorConfig, responses: SimulatedResponses) -> dict[str, Answerer]:
    """What answers a batch's lines, by endpoint: the same logic as the endpoints' handlers, without faults.

    A Responses line is kept like any response (unless `store` is false), and may continue one (`responses`).
    """

    def chat(raw: bytes) -> dict[str, Any]:
        checked, body = chat_body(raw)
        chunks = chunk_count({}, config.chunks, checked.view.n or 1)
        return render_completion(Answer(body=body, latency=0, interval=0, chunks=chunks, fault=""))

    return {
        "/v1/chat/completions": chat,
        "/v1/embeddings": lambda raw: _embeddings_answer(embeddings_ask(raw)),
        "/v1/moderations": moderation_answer,
        "/v1/responses": lambda raw: responses.batch_line(raw, config.chunks),
        "/v1/completions": lambda raw: batch_completion(raw, config.chunks),
    }


def _hashed_vector(text: str, dimension: int) -> list[float]:
    """A unit vector made from `text`'s words: each word adds +-1 at three hashed positions."""
    vector = np.zeros(dimension, dtype=np.float64)
    for word in _WORDS.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=12).digest()
        for at in range(0, 12, 4):
            slot = int.from_bytes(digest[at : at + 4], "big")
            vector[slot % dimension] += 1.0 if slot & 1 else -1.0
    norm = float(np.linalg.norm(vector))
    values: list[float] = (vector / norm if norm else vector).round(6).tolist()
    return values


def build_simulator(config: SimulatorConfig | None = None) -> web.Application:
    """The simulated upstream as an aiohttp application (serve it with `start_simulator` or `run_simulator`)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[rejections])
    app[CONFIG] = config or SimulatorConfig()
    app[CALLS] = OrderedDict()
    handlers = _Simulator()
    responses = SimulatedResponses()
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/responses", responses.create)
        app.router.add_get(prefix + "/responses/{response_id}", responses.retrieve)
        app.router.add_delete(prefix + "/responses/{response_id}", responses.delete)
        app.router.add_get(prefix + "/responses/{response_id}/input_items", responses.input_items)
        app.router.add_post(prefix + "/responses/{response_id}/cancel", responses.cancel)
        app.router.add_post(prefix + "/chat/completions", handlers.chat)
        app.router.add_post(prefix + "/embeddings", handlers.embeddings)
        app.router.add_post(prefix + "/completions", completions)
        app.router.add_get(prefix + "/models", handlers.models)
        app.router.add_get(prefix + "/models/{model_id:.+}", handlers.model)
    app.router.add_get("/_simulator/calls/{request_id}", handlers.call)
    add_file_routes(app)
    add_fine_tuning_routes(app)
    add_batch_routes(app, _batch_answerers(app[CONFIG], responses))
    add_moderation_routes(app)
    return app


@dataclass(slots=True)
class SimulatorServer:
    """A simulated upstream running in the current event loop."""

    runner: web.AppRunner
    base_url: str
    """Its OpenAI base URL, e.g. `http://127.0.0.1:43121/v1`."""

    async def aclose(self) -> None:
        """Stop serving and close every connection."""
        await self.runner.cleanup()


async def start_simulator(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> SimulatorServer:
    """Serve the simulated upstream in this event loop (port 0 picks a free port)."""
    runner = web.AppRunner(build_simulator(config), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    return SimulatorServer(runner=runner, base_url=f"http://{host}:{bound_port}/v1")


def run_simulator(config: SimulatorConfig, host: str, port: int) -> None:
    """Serve the simulated upstream until interrupted (`turnout simulate`)."""
    web.run_app(
        build_simulator(config),
        host=host,
        port=port,
        handler_cancellation=True,
        access_log=None,
        print=None,
        loop=_new_loop(),
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
