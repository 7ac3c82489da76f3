"""What the simulated upstream answers: completion bodies, stream events, tool calls, logprobs and usage.

The content is words (`x-simulated-chunks` of them), or JSON when `response_format` asks for it: a JSON
object for `json_object` (of the schema the prompt writes, if it writes one), a value valid against the
schema for `json_schema` (`schema_values`), cut into
token-like pieces. Tool calls follow `tool_calls`. With `logprobs: true`, each content piece has its
logprob and `top_logprobs` alternatives, in the body and in each chunk.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from proxy.wire.sse import DONE_EVENT, encode_event
from routes.simulator.schema_values import schema_in, value_for
from routes.simulator.tool_calls import ToolCall, chosen_functions, tool_calls

__all__ = ["ID_PLACEHOLDER", "Answer", "formatted_pieces", "render_completion", "render_events"]

ID_PLACEHOLDER = b"chatcmpl-" + b"0" * 29
_WORDS = (
    "This",
    "is",
    "a",
    "simulated",
    "answer",
    "from",
    "the",
    "Turnout",
    "test",
    "upstream",
    ",",
    "written",
    "one",
    "word",
    "at",
    "a",
    "time",
    ".",
)


@dataclass(slots=True)
class Answer:
    """What one simulated request asked for, resolved from its body, headers and the server defaults."""

    body: dict[str, Any]
    latency: float
    interval: float
    chunks: int
    fault: str
    id: str = field(default_factory=lambda: f"chatcmpl-{random.getrandbits(116):029x}")
    created: int = field(default_factory=lambda: int(time.time()))
    reported: dict[str, Any] | None = None
    """The usage to report as given (`x-simulated-usage`) instead of the simulator's count."""
    differs: bool = False
    """Answer other words than usual (`x-simulated-differ`): a model that disagrees with the others."""
    reply: str | None = None
    """The content to answer, as given (`x-simulated-reply`): a judge's verdict, say."""
    _pieces: list[str] | None = None

    @property
    def model(self) -> str:
        """The model the request asked for (the simulator answers as that model)."""
        return str(self.body.get("model") or "gpt-4.1")

    @property
    def choices(self) -> int:
        """How many choices (`n`)."""
        return max(1, int(self.body.get("n") or 1))

    def functions(self) -> list[dict[str, Any]]:
        """The functions the answer calls (none: it answers in content)."""
        return chosen_functions(self.body)

    def pieces(self) -> list[str]:
        """The answer's content, one token-like piece per chunk: words, or JSON when `response_format` asks."""
        if self._pieces is None:
            given = [self.reply] if self.reply is not None else None
            self._pieces = given or _pieces(self.body, self.chunks, differs=self.differs)
        return self._pieces

    def logprobs(self) -> int | None:
        """How many alternatives a content token's logprob lists, or None when `logprobs` is not asked for."""
        if self.body.get("logprobs") is not True:
            return None
        return int(self.body.get("top_logprobs") or 0)

    def usage(self) -> dict[str, Any]:
        """Token counts in OpenAI's shape: a rough prompt estimate, one token per content piece (or as `reported`)."""
        if self.reported is not None:
            return self.reported
        prompt = sum(4 + len(str(m.get("content") or "")) // 4 for m in self.body.get("messages") or [])
        completion = len(self.pieces()) * self.choices
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def envelope(self, kind: str) -> dict[str, Any]:
        """The fields every body or chunk of this answer shares."""
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_sim0001",
        }


_PIECE = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")


def _pieces(body: dict[str, Any], chunks: int, *, differs: bool = False) -> list[str]:
    """The content: `chunks` words (others, when it `differs`), or the JSON text `response_format` asks for."""
    vocabulary = _WORDS[::-1] if differs else _WORDS
    words = [(" " if i else "") + vocabulary[i % len(vocabulary)] for i in range(chunks)]
    return formatted_pieces(body.get("response_format"), body.get("messages"), words)


def formatted_pieces(response_format: object, messages: object, words: list[str]) -> list[str]:
    """`words`, or the JSON text a response format asks for, in pieces.

    `response_format` is chat's (the schema under `json_schema`) or the Responses API's `text.format` (the
    schema beside `type`). For `json_object`, a value of the schema the prompt gives, if it gives one
    (`schema_in`, which reads chat messages and Responses input items alike).
    """
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        prompted = schema_in(messages)
        value = value_for(prompted) if prompted is not None else {"answer": "".join(words)}
        text = msgspec.json.encode(value).decode()
    elif kind == "json_schema" and isinstance(response_format, dict):
        spec = response_format.get("json_schema", response_format)
        schema = spec.get("schema") if isinstance(spec, dict) else None
        text = msgspec.json.encode(value_for(schema if isinstance(schema, dict) else {})).decode()
    else:
        return words
    return _PIECE.findall(text)


def _token_logprob(token: str, at: int, alternatives: int) -> dict[str, Any]:
    """A content token's logprob entry: a plausible, deterministic logprob and `alternatives` lower ones."""
    logprob = -round(0.002 + 0.037 * (at % 7), 6)
    top = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
    for k in range(1, alternatives):
        other = (" " if token.startswith(" ") else "") + _WORDS[(at + k) % len(_WORDS)]
        top.append({"token": other, "logprob": round(logprob - 1.5 * k, 6), "bytes": list(other.encode())})
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top[:alternatives]}


def _logprobs(answer: Answer, pieces: list[str], start: int) -> dict[str, Any] | None:
    """The `logprobs` of a choice (or of a chunk's pieces, from position `start`), or None when not asked."""
    alternatives = answer.logprobs()
    if alternatives is None:
        return None
    content = [_token_logprob(piece, start + i, alternatives) for i, piece in enumerate(pieces)]
    return {"content": content, "refusal": None}


def _call_body(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _message(answer: Answer) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """One choice's message, logprobs and finish reason (its tool calls with ids of their own)."""
    functions = answer.functions()
    if functions:
        calls = [_call_body(call) for call in tool_calls(functions)]
        message = {"role": "assistant", "content": None, "tool_calls": calls, "refusal": None, "annotations": []}
        return message, None if answer.logprobs() is None else {"content": None, "refusal": None}, "tool_calls"
    pieces = answer.pieces()
    message = {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}
    return message, _logprobs(answer, pieces, 0), "stop"


def render_completion(answer: Answer) -> dict[str, Any]:
    """The `chat.completion` body for `answer`."""
    choices = []
    for index in range(answer.choices):
        message, logprobs, finish = _message(answer)
        choices.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish})
    return {**answer.envelope("chat.completion"), "choices": choices, "usage": answer.usage()}


_Delta = tuple[dict[str, Any], dict[str, Any] | None, str | None]


def _content_deltas(answer: Answer) -> list[_Delta]:
    """The (delta, logprobs, finish_reason) triples of a content answer's stream (the same for every choice)."""
    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    pieces = answer.pieces()
    if answer.logprobs() is None:
        words: list[_Delta] = [({"content": piece}, None, None) for piece in pieces]
    else:
        words = [({"content": p}, _logprobs(answer, [p], i), None) for i, p in enumerate(pieces)]
    return [(first, None, None), *words, ({}, None, "stop")]


def _call_deltas(functions: list[dict[str, Any]]) -> list[_Delta]:
    """The triples of one choice's streamed tool calls: each call's head (id, name), then its arguments."""
    deltas: list[_Delta] = []
    for index, call in enumerate(tool_calls(functions)):
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        first = {"role": "assistant", "content": None, "refusal": None} if index == 0 else {}
        deltas.append(({**first, "tool_calls": [head]}, None, None))
        pieces = [call.arguments[i : i + 8] for i in range(0, len(call.arguments), 8)]
        deltas += [({"tool_calls": [{"index": index, "function": {"arguments": p}}]}, None, None) for p in pieces]
    return [*deltas, ({}, None, "tool_calls")]


def render_events(answer: Answer) -> list[bytes]:
    """The SSE events of a streamed answer, `[DONE]` included."""
    envelope = answer.envelope("chat.completion.chunk")
    include_usage = bool((answer.body.get("stream_options") or {}).get("include_usage"))
    if include_usage:
        envelope["usage"] = None
    functions, n = answer.functions(), answer.choices
    if functions:  # each choice calls with ids of its own
        steps: Any = zip(*[_call_deltas(functions) for _ in range(n)], strict=True)
    else:
        steps = ([delta] * n for delta in _content_deltas(answer))
    events = []
    for step in steps:
        choices = [
            {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            for i, (delta, logprobs, finish) in enumerate(step)
        ]
        events.append(encode_event(msgspec.json.encode({**envelope, "choices": choices})))
    if include_usage:
        events.append(encode_event(msgspec.json.encode({**envelope, "choices": [], "usage": answer.usage()})))
    return [*events, DONE_EVENT]
