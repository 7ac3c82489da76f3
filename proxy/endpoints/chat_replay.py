"""Cached answers in either form: a stream assembled into a completion, a completion replayed as a stream.

An entry is stored in the form it was produced in: `C` + the `chat.completion` body, or `S` + the
stream's SSE events as the route sent them (usage chunk and `[DONE]` included). A hit is turned into
the form the new request asks for: a stream replays as it came (its usage chunk dropped unless asked
for), a completion replays as the chunks a live stream of it would have had (role, content by word,
tool calls, finish reason, the usage chunk when asked for, `[DONE]`); either assembles into a completion.

Every entry is read whole as an upstream's answer is (`proxy.wire.answers`) before any of it is replayed: an
entry stored by another version, or changed in a shared Redis, is never trusted. One that does not read
raises `UnreadableAnswerError`, which the cache answers as a miss (`replay()`, `replayable()`).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from proxy.endpoints.cited import SOURCES_FIELD, first_sources
from proxy.endpoints.framing import COMPLETION, STREAM, StoredForms, entry, keep_envelope
from proxy.wire.answers import ChunkView, CompletionView
from proxy.wire.sse import DONE_EVENT, encode_event

__all__ = [
    "COMPLETION",
    "STREAM",
    "entry",
    "replay",
    "replayable",
]

_WORD = re.compile(r"\S+\s*|\s+")
_ENVELOPE = ("id", "created", "model", "system_fingerprint", "service_tier")


def _merge_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    call = calls.setdefault(int(delta.get("index", 0)), {"function": {"name": "", "arguments": ""}})
    for field in ("id", "type"):
        if delta.get(field):
            call[field] = delta[field]
    function = delta.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


class _Choice:
    """One choice being assembled from its deltas."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        self.role = delta.get("role") or self.role
        self.content.append(delta.get("content") or "")
        self.refusal.append(delta.get("refusal") or "")
        for call in delta.get("tool_calls") or ():
            _merge_call(self.calls, call)
        if delta.get("function_call"):
            if self.function_call is None:
                self.function_call = {"name": "", "arguments": ""}
            self.function_call["name"] += delta["function_call"].get("name") or ""
            self.function_call["arguments"] += delta["function_call"].get("arguments") or ""
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if choice.get("logprobs"):
            logprobs = self.logprobs = self.logprobs or {"content": [], "refusal": []}
            for field in ("content", "refusal"):
                logprobs[field].extend(choice["logprobs"].get(field) or [])

    def render(self) -> dict[str, Any]:
        content, refusal = "".join(self.content), "".join(self.refusal)
        message: dict[str, Any] = {"role": self.role, "content": content or None, "refusal": refusal or None}
        if self.calls:
            message["tool_calls"] = [self.calls[index] for index in sorted(self.calls)]
        if self.function_call is not None:
            message["function_call"] = self.function_call
        logprobs = None
        if self.logprobs is not None:
            logprobs = {field: values or None for field, values in self.logprobs.items()}
        return {"index": self.index, "message": message, "logprobs": logprobs, "finish_reason": self.finish_reason}


def _assemble(chunks: list[dict[str, Any]]) -> bytes:
    """The `chat.completion` body a completed stream's chunks add up to (their shape checked when read)."""
    body: dict[str, Any] = {"object": "chat.completion"}
    choices: dict[int, _Choice] = {}
    usage = None
    for chunk in chunks:
        keep_envelope(body, chunk, _ENVELOPE)
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            choices.setdefault(index, _Choice(index)).add(choice)
        usage = chunk.get("usage") or usage
    body["choices"] = [choices[index].render() for index in sorted(choices)]
    if usage is not None:  # optional, but not nullable, in a completion
        body["usage"] = usage
    sources = first_sources(chunks)  # a RAG answer's, from its first chunk: last in the body, as a live one has it
    if sources is not None:
        body[SOURCES_FIELD] = sources
    return msgspec.json.encode(body)


def _choice_deltas(choice: dict[str, Any]) -> list[tuple[dict[str, Any], Any, str | None]]:
    """(delta, logprobs, finish_reason) for each chunk of one choice, in a live stream's order."""
    message = choice.get("message") or {}
    content = message.get("content")
    calls = message.get("tool_calls")
    first: dict[str, Any] = {"role": message.get("role", "assistant"), "content": "" if content else None}
    first["refusal"] = None
    deltas: list[tuple[dict[str, Any], Any, str | None]] = [(first, None, None)]
    logprobs = choice.get("logprobs")
    if content and logprobs:
        deltas.append(({"content": content}, logprobs, None))  # logprobs cannot be split by word
    elif content:
        deltas.extend(({"content": word}, None, None) for word in _WORD.findall(content))
    if message.get("refusal"):
        deltas.append(({"refusal": message["refusal"]}, None, None))
    if calls:
        deltas.append(({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}, None, None))
    if message.get("function_call"):
        deltas.append(({"function_call": message["function_call"]}, None, None))
    deltas.append(({}, None, choice.get("finish_reason") or "stop"))
    return deltas


def _to_events(body: dict[str, Any], wants_usage: bool) -> bytes:
    """The SSE events of a live stream of a completion already read (its shape checked), `[DONE]` last."""
    envelope: dict[str, Any] = {"id": body.get("id"), "object": "chat.completion.chunk", "created": body.get("created")}
    envelope["model"] = body.get("model")
    for field in ("system_fingerprint", "service_tier"):
        if body.get(field) is not None:
            envelope[field] = body[field]
    if wants_usage:
        envelope["usage"] = None
    out = []
    cited = {SOURCES_FIELD: body[SOURCES_FIELD]} if body.get(SOURCES_FIELD) is not None else {}
    for choice in body.get("choices") or ():
        for delta, logprobs, finish in _choice_deltas(choice):
            chunk = {"index": choice.get("index", 0), "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            out.append(encode_event(msgspec.json.encode({**envelope, "choices": [chunk], **cited})))
            cited = {}  # a RAG answer's sources go with the first chunk, as a live stream's do
    if wants_usage and body.get("usage") is not None:
        out.append(encode_event(msgspec.json.encode({**envelope, "choices": [], "usage": body["usage"]})))
    out.append(DONE_EVENT)
    return b"".join(out)


_FORMS = StoredForms(CompletionView, ChunkView, _to_events, _assemble)

replay = _FORMS.replay
"""A stored entry as the answer to a new request, in the form it asks for (`StoredForms.replay`)."""
replayable = _FORMS.replayable
"""Whether an entry replays in both forms (`StoredForms.replayable`)."""
