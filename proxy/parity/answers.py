"""What an evaluator reads of a logged exchange: an answer's text, its tool calls, its request's text and schema.

Answers and requests are the traffic log's dicts (`proxy.traffic.record.Exchange.answer` / `.request`): a chat
completion (a stream is logged assembled into the same shape), a Responses API response, or a legacy
completion. Each reader takes the first choice (or every output message, for the Responses API) and returns
None where the answer has no such part; none of them raises on an unexpected shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Call", "Pair", "request_schema", "request_text", "text_of", "tool_calls_of"]


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call: the function's name and its arguments, as the model wrote them (a JSON string)."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Pair:
    """A request, the candidate route's answer and the reference route's answer (both answers bodies)."""

    candidate: Mapping[str, Any]
    reference: Mapping[str, Any]
    request: Mapping[str, Any] | None = None


def _mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _list(value: object) -> Sequence[Any]:
    return value if isinstance(value, list) else ()


def _first_message(answer: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choices = _list(answer.get("choices"))
    first = _mapping(choices[0]) if choices else None
    return _mapping(first.get("message")) if first is not None else None


def _parts_text(content: object) -> str | None:
    """A message's content: a string, or the text of its text parts (chat's and the Responses API's)."""
    if isinstance(content, str):
        return content
    texts = [part.get("text") for part in _list(content) if isinstance(part, Mapping)]
    strings = [text for text in texts if isinstance(text, str)]
    return "".join(strings) if strings else None


def text_of(answer: Mapping[str, Any]) -> str | None:
    """The answer's text: the first choice's message (or legacy `text`), or the Responses API's output messages."""
    if "output" in answer:
        texts = [
            _parts_text(item.get("content"))
            for item in _list(answer.get("output"))
            if isinstance(item, Mapping) and item.get("type") == "message"
        ]
        strings = [text for text in texts if text is not None]
        return "".join(strings) if strings else None
    message = _first_message(answer)
    if message is not None:
        return _parts_text(message.get("content"))
    choices = _list(answer.get("choices"))
    first = _mapping(choices[0]) if choices else None
    text = first.get("text") if first is not None else None
    return text if isinstance(text, str) else None


def tool_calls_of(answer: Mapping[str, Any]) -> list[Call]:
    """The answer's tool calls (chat's `tool_calls` or legacy `function_call`; Responses `function_call` items)."""
    if "output" in answer:
        items: Sequence[Any] = [
            item
            for item in _list(answer.get("output"))
            if isinstance(item, Mapping) and item.get("type") == "function_call"
        ]
    else:
        message = _first_message(answer) or {}
        functions = [
            _mapping(call.get("function")) for call in _list(message.get("tool_calls")) if isinstance(call, Mapping)
        ]
        items = [function for function in functions if function is not None]
        legacy = _mapping(message.get("function_call"))
        if legacy is not None:
            items = [*items, legacy]
    calls = []
    for item in items:
        name, arguments = item.get("name"), item.get("arguments")
        if isinstance(name, str):
            calls.append(Call(name, arguments if isinstance(arguments, str) else json.dumps(arguments)))
    return calls


def request_text(request: Mapping[str, Any] | None) -> str:
    """The request as a judge reads it: one `role: text` line per message (chat, Responses) or the prompt."""
    if request is None:
        return ""
    lines = []
    instructions = request.get("instructions")
    if isinstance(instructions, str):
        lines.append(f"system: {instructions}")
    conversation = request.get("messages", request.get("input"))
    if isinstance(conversation, str):
        lines.append(f"user: {conversation}")
    for message in _list(conversation):
        if isinstance(message, Mapping):
            text = _parts_text(message.get("content"))
            if text is not None:
                lines.append(f"{message.get('role', 'user')}: {text}")
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        lines.append(prompt)
    return "\n".join(lines)


def request_schema(request: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The JSON schema the request asked its answer to follow (chat's `response_format`, Responses' `text.format`)."""
    if request is None:
        return None
    response_format = _mapping(request.get("response_format"))
    if response_format is not None and response_format.get("type") == "json_schema":
        return _mapping((_mapping(response_format.get("json_schema")) or {}).get("schema"))
    text_format = _mapping((_mapping(request.get("text")) or {}).get("format"))
    if text_format is not None and text_format.get("type") == "json_schema":
        return _mapping(text_format.get("schema"))
    return None
