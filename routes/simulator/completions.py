"""The simulated legacy `POST /v1/completions`: `text_completion` answers and streams, as OpenAI sends them.

A `cmpl-` id, one choice per prompt and `n` (index `prompt * n + choice`), the simulated words as each
choice's `text` (after the prompt, with `echo`; cut at `max_tokens`, finish reason `length`), made-up
`logprobs` when asked for (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`), and the usage
(a token array counts its tokens; a string about 1.3 tokens a word). A stream sends one chunk per word
and choice, the finish reason on each choice's last one (null before it, as OpenAI does), the usage
chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`.

The request is checked as Turnout checks it (`proxy.wire.inputs`); the `x-simulated-*` headers apply as
they do for chat (latency, chunk interval, chunks, faults: a status, `timeout`, `midstream`, `disconnect`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from proxy.wire.errors import InvalidRequestError
from proxy.wire.inputs import CompletionsRequest, decode_completions_body
from proxy.wire.sse import DONE_EVENT, encode_event
from routes.simulator.common import CONFIG, error_response, read_body, record_call
from routes.simulator.limits import SimulatorRejectedError, chunk_count, fault_of, reported_usage, wait_ms

__all__ = ["batch_completion", "completions", "render_completion"]

_MAX_ECHOED = 8 * 1024 * 1024
"""Prompt characters echoed over all choices (`echo` with a long prompt and a large `n`)."""
_WORDS = ("This", "is", "a", "simulated", "completion", "from", "the", "Turnout", "test", "upstream", ".")


def _prompts(request: CompletionsRequest) -> list[str | list[int]]:
    """Each prompt: a string, or a token array."""
    prompt = request.prompt
    if prompt is None:  # OpenAI's default: an empty document
        return [""]
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(item, int) for item in prompt):
        return [[item for item in prompt if isinstance(item, int)]]
    return [item for item in prompt if isinstance(item, str | list)]


def _tokens(prompt: str | list[int]) -> int:
    return len(prompt) if isinstance(prompt, list) else max(1, round(len(prompt.split()) * 1.3))


def _logprobs(words: list[str], top: int, offset: int) -> dict[str, Any]:
    """Made-up but well-formed logprobs for `words` (their text starting at `offset`)."""
    offsets, at = [], offset
    for word in words:
        offsets.append(at)
        at += len(word)
    token_logprobs = [-0.1 * (1 + index % 5) for index in range(len(words))]
    tops = [
        {word: value, **({" the": value - 1.0} if top > 1 else {})}
        for word, value in zip(words, token_logprobs, strict=True)
    ]
    return {"tokens": words, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


@dataclass(slots=True)
class _Completion:
    """One simulated completion: what it asked for, resolved from its body and headers."""

    request: CompletionsRequest
    chunks: int
    id: str = field(default_factory=lambda: f"cmpl-{random.getrandbits(116):029x}")
    created: int = field(default_factory=lambda: int(time.time()))
    reported: dict[str, Any] | None = None
    """The usage to report as given (`x-simulated-usage`)."""

    @property
    def n(self) -> int:
        return self.request.n or 1

    def words(self) -> list[str]:
        count = self.chunks if self.request.max_tokens is None else min(self.chunks, self.request.max_tokens)
        return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(count)]

    @property
    def finish_reason(self) -> str:
        return "length" if len(self.words()) < self.chunks else "stop"

    def envelope(self) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.request.model}

    def usage(self, prompts: list[str | list[int]]) -> dict[str, Any]:
        if self.reported is not None:
            return self.reported
        prompt = sum(_tokens(text) for text in prompts)
        completion = len(self.words()) * len(prompts) * self.n
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def choices(self, prompts: list[str | list[int]]) -> list[dict[str, Any]]:
        words, top = self.words(), self.request.logprobs
        choices = []
        for number, prompt in enumerate(prompts):
            echoed = prompt if self.request.echo and isinstance(prompt, str) else ""
            for choice in range(self.n):
                logprobs = _logprobs(words, top, len(echoed)) if top is not None else None
                text = echoed + "".join(words)
                index = number * self.n + choice
                choices.append(
                    {"text": text, "index": index, "logprobs": logprobs, "finish_reason": self.finish_reason}
                )
        return choices

    def events(self, prompts: list[str | list[int]], *, include_usage: bool) -> list[bytes]:
        """The stream: each choice's echoed prompt and words, one chunk each, the usage chunk, `[DONE]`."""
        envelope, events, words, top = self.envelope(), [], self.words(), self.request.logprobs
        for number, prompt in enumerate(prompts):
            echoed = prompt if self.request.echo and isinstance(prompt, str) else ""
            pieces = [*([echoed] if echoed else []), *words] or [""]
            for choice in range(self.n):
                for count, piece in enumerate(pieces, 1):
                    part: dict[str, Any] = {"text": piece, "index": number * self.n + choice}
                    part["logprobs"] = _logprobs([piece], top, 0) if top is not None else None
                    part["finish_reason"] = self.finish_reason if count == len(pieces) else None
                    events.append(encode_event(msgspec.json.encode({**envelope, "choices": [part]})))
        if include_usage:
            usage = {**envelope, "choices": [], "usage": self.usage(prompts)}
            events.append(encode_event(msgspec.json.encode(usage)))
        return [*events, DONE_EVENT]


def render_completion(request: CompletionsRequest, chunks: int) -> tuple[dict[str, Any], list[bytes]]:
    """A simulated completion of `request`, `chunks` words a choice: the whole answer, and its stream's events."""
    completion, prompts = _Completion(request, chunks), _prompts(request)
    answer = {**completion.envelope(), "choices": completion.choices(prompts), "usage": completion.usage(prompts)}
    return answer, completion.events(prompts, include_usage=request.wants_usage_chunk)


async def _stream(request: web.Request, events: list[bytes], fault: str, interval: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    if fault in ("midstream", "disconnect"):
        await response.write(b"".join(events[:2]))
        if fault == "disconnect" and request.transport is not None:
            request.transport.close()
            return response
        error = {"message": "Simulated mid-stream failure.", "type": "server_error", "param": None, "code": None}
        await response.write(encode_event(msgspec.json.encode({"error": error})))
        return response
    if interval:
        for sent, event in enumerate(events):
            if sent and event != DONE_EVENT:
                await asyncio.sleep(interval)
            await response.write(event)
    else:
        await response.write(b"".join(events))
    await response.write_eof()
    return response


def _asked(raw: bytes) -> tuple[CompletionsRequest, list[str | list[int]]]:
    """A completions request as Turnout checks it, and its prompts (an echo beyond `_MAX_ECHOED` refused).

    Raises:
        SimulatorRejectedError: the request is not one OpenAI would answer, or asks too much of the simulator.
    """
    try:
        asked = decode_completions_body(raw).view
    except InvalidRequestError as exc:
        raise SimulatorRejectedError.of(exc) from exc
    prompts = _prompts(asked)
    if asked.echo and sum(len(p) for p in prompts if isinstance(p, str)) * (asked.n or 1) > _MAX_ECHOED:
        message = f"The simulator echoes at most {_MAX_ECHOED} characters of prompt over all choices."
        raise SimulatorRejectedError(message, param="echo")
    return asked, prompts


def batch_completion(raw: bytes, chunks: int) -> dict[str, Any]:
    """A batch line's `text_completion`: checked and answered as `POST /v1/completions` answers, without faults."""
    asked, prompts = _asked(raw)
    completion = _Completion(asked, chunk_count({}, chunks, len(prompts) * (asked.n or 1)))
    return {**completion.envelope(), "choices": completion.choices(prompts), "usage": completion.usage(prompts)}


async def completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/completions`: a `text_completion`, or its stream."""
    raw = await read_body(request)
    asked, prompts = _asked(raw)
    config, headers = request.app[CONFIG], request.headers
    completion = _Completion(
        asked, chunk_count(headers, config.chunks, len(prompts) * (asked.n or 1)), reported=reported_usage(headers)
    )
    fault = fault_of(headers, asked.model)
    latency = wait_ms(headers, "x-simulated-latency-ms", config.latency_ms) / 1000
    interval = wait_ms(headers, "x-simulated-chunk-interval-ms", config.chunk_interval_ms) / 1000
    record = record_call(request, raw, msgspec.json.decode(raw))
    try:
        if fault == "timeout":
            await asyncio.sleep(3600)
        if latency:
            await asyncio.sleep(latency)
        status = fault.removeprefix("text-")
        if status.isdigit():
            record["outcome"] = "fault"
            return error_response(int(status), fault)
        if asked.stream:
            events = completion.events(prompts, include_usage=asked.wants_usage_chunk)
            response = await _stream(request, events, fault, interval)
            record["outcome"] = "fault" if fault else "completed"
            return response
        record["outcome"] = "completed"
        answer = {**completion.envelope(), "choices": completion.choices(prompts), "usage": completion.usage(prompts)}
        return web.Response(body=msgspec.json.encode(answer), content_type="application/json")
    except asyncio.CancelledError:
        record["outcome"] = "cancelled"
        record["cancelled_at"] = time.time()
        raise
