"""What the simulated upstream answers: completion bodies, stream events, tool calls and usage."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from proxy.wire.sse import DONE_EVENT, encode_event

__all__ = ["ID_PLACEHOLDER", "Answer", "render_completion", "render_events"]

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

    @property
    def model(self) -> str:
        """The model the request asked for (the simulator answers as that model)."""
        return str(self.body.get("model") or "gpt-4")

    def words(self) -> list[str]:
        """The answer's content, one word per chunk."""
        return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(self.chunks)]

    def tool(self) -> dict[str, Any] | None:
        """The function to call, when the request offers tools and the last message is not a tool result."""
        tools = self.body.get("tools") or []
        messages = self.body.get("messages") or [{}]
        if not tools or self.body.get("tool_choice") == "none" or messages[-1].get("role") == "tool":
            return None
        function: dict[str, Any] = tools[0].get("function", {})
        return function

    def usage(self) -> dict[str, Any]:
        """Token counts in OpenAI's shape: a rough prompt estimate, one token per content chunk."""
        prompt = sum(4 + len(str(m.get("content") or "")) // 4 for m in self.body.get("messages") or [])
        completion = self.chunks * max(1, int(self.body.get("n") or 1))
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


def _arguments(function: dict[str, Any]) -> str:
    """Plausible JSON arguments for `function`: a value of the right type for each required parameter."""
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties") or {}
    samples = {"string": "simulated", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    values = {name: samples.get(str(properties.get(name, {}).get("type"))) for name in parameters.get("required", [])}
    return msgspec.json.encode(values).decode()


def render_completion(answer: Answer) -> dict[str, Any]:
    """The `chat.completion` body for `answer`."""
    function = answer.tool()
    if function is not None:
        call: dict[str, Any] = {"id": "call_" + answer.id[-24:], "type": "function"}
        call["function"] = {"name": function.get("name", "f"), "arguments": _arguments(function)}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": "".join(answer.words()), "refusal": None, "annotations": []}
        finish = "stop"
    n = max(1, int(answer.body.get("n") or 1))
    choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": finish} for i in range(n)]
    return {**answer.envelope("chat.completion"), "choices": choices, "usage": answer.usage()}


def _deltas(answer: Answer) -> list[tuple[dict[str, Any], str | None]]:
    """The (delta, finish_reason) pairs of a stream, first to last, for one choice."""
    function = answer.tool()
    first: dict[str, Any] = {"role": "assistant", "content": None if function else "", "refusal": None}
    if function is None:
        words: list[tuple[dict[str, Any], str | None]] = [({"content": word}, None) for word in answer.words()]
        return [(first, None), *words, ({}, "stop")]
    arguments = _arguments(function)
    call_id = "call_" + answer.id[-24:]
    head: dict[str, Any] = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": function.get("name", "f"), "arguments": ""},
    }
    pieces = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}, None) for p in pieces
    ]
    return [({**first, "tool_calls": [head]}, None), *deltas, ({}, "tool_calls")]


def render_events(answer: Answer) -> list[bytes]:
    """The SSE events of a streamed answer, `[DONE]` included."""
    envelope = answer.envelope("chat.completion.chunk")
    include_usage = bool((answer.body.get("stream_options") or {}).get("include_usage"))
    if include_usage:
        envelope["usage"] = None
    n = max(1, int(answer.body.get("n") or 1))
    events = []
    for delta, finish in _deltas(answer):
        choices = [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish} for i in range(n)]
        events.append(encode_event(msgspec.json.encode({**envelope, "choices": choices})))
    if include_usage:
        events.append(encode_event(msgspec.json.encode({**envelope, "choices": [], "usage": answer.usage()})))
    return [*events, DONE_EVENT]
