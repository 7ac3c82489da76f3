"""`training_example(request, answer)`: one logged chat exchange as a line of OpenAI's chat fine-tuning format.

The line is `{"messages": [...], "tools": [...], "parallel_tool_calls": ...}` (the last two only when the
request had them): the request's messages as the client sent them, then the answer's message as the
final assistant turn. What OpenAI's format accepts, and so what is kept:

- roles `system`, `user`, `assistant`, `tool` (a `developer` message is the system prompt of the newer
  models: it becomes `system`); `name` on the first three; `tool_calls` on assistant messages (`id`,
  `type`, `function.name`, `function.arguments`), `tool_call_id` on tool messages;
- content as a string: a list of text parts is joined by newlines; any other part (an image, audio, a
  file) leaves the exchange out, as does a legacy `functions`/`function_call` conversation;
- `tools` of type `function` only;
- `weight` (0 or 1) on assistant messages: with earlier assistant turns (a multi-turn conversation), they
  get 0 and the logged answer 1, so that only the answer this route gave is trained on (the earlier turns
  are the client's history: whoever answered them, they are context); a single assistant turn has none.

An answer is left out when it is not a complete one: no choice, a refusal, `finish_reason` `length` (cut
by `max_tokens`) or `content_filter`, or neither content nor tool calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Example", "Skipped", "TrainingLine", "training_example"]

TrainingLine = dict[str, Any]
"""One line of the fine-tuning file, as JSON data."""

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_INCOMPLETE = {"length": "the answer was cut by max_tokens", "content_filter": "the answer was filtered"}


@dataclass(frozen=True, slots=True)
class Example:
    """A training line, and the key of its prompt (for `--dedupe`: the same prompt asked twice is one example)."""

    line: TrainingLine
    prompt_key: str
    """SHA-256 of the prompt: every message but the answer, and the tools, as canonical JSON."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """Why an exchange makes no training line."""

    reason: str


class _UnfitError(Exception):
    """The exchange cannot be written in the format (the message says why)."""


def training_example(request: Mapping[str, Any], answer: Mapping[str, Any]) -> Example | Skipped:
    """The training line of a chat completion `request` (the client's JSON body) and its `answer` (the response)."""
    try:
        messages = _messages(request.get("messages"))
        final = _answer_message(answer)
        tools = _tools(request)
    except _UnfitError as exc:
        return Skipped(str(exc))
    if not any(message["role"] == "user" for message in messages):
        return Skipped("no user message")
    line: TrainingLine = {}
    prompt: dict[str, Any] = {"messages": messages}
    if tools is not None:
        prompt["tools"] = tools
        line["tools"] = tools
        if isinstance(request.get("parallel_tool_calls"), bool):
            line["parallel_tool_calls"] = request["parallel_tool_calls"]
    earlier = [message for message in messages if message["role"] == "assistant"]
    if earlier:
        for message in earlier:
            message["weight"] = 0
        final["weight"] = 1
    line = {"messages": [*messages, final], **line}
    key = hashlib.sha256(json.dumps(prompt, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Example(line=line, prompt_key=key)


def _messages(raw: object) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _UnfitError("the request has no messages")
    return [_message(message) for message in raw]


def _message(raw: object) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _UnfitError("a message is not an object")
    role = _ROLES.get(str(raw.get("role")))
    if role is None:
        raise _UnfitError(f"a message has the role {str(raw.get('role'))[:20]!r}, which fine-tuning does not take")
    if raw.get("function_call") is not None:
        raise _UnfitError("legacy function calls")
    message: dict[str, Any] = {"role": role}
    content = _text(raw.get("content"))
    if role == "tool":
        if not isinstance(raw.get("tool_call_id"), str):
            raise _UnfitError("a tool message has no tool_call_id")
        message["tool_call_id"] = raw["tool_call_id"]
    if role == "assistant" and raw.get("tool_calls"):
        message["tool_calls"] = _tool_calls(raw["tool_calls"])
        if content is not None:
            message["content"] = content
    elif content is None:
        raise _UnfitError(f"a {role} message has no content")
    else:
        message["content"] = content
    if role in ("system", "user", "assistant") and isinstance(raw.get("name"), str) and raw["name"]:
        message["name"] = raw["name"]
    return message


def _text(content: object) -> str | None:
    """The content as one string (text parts joined), None when empty or absent."""
    if content is None:
        return None
    if isinstance(content, str):
        return content or None
    if not isinstance(content, list):
        raise _UnfitError("a message's content is neither text nor parts")
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, Mapping) else None
            raise _UnfitError(f"a message has a {str(kind)[:20]!r} part (only text is exported)")
        texts.append(part["text"])
    return "\n".join(texts) or None


def _tool_calls(raw: object) -> list[dict[str, Any]]:
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise _UnfitError("tool_calls is not a list")
    calls = []
    for call in raw:
        function = call.get("function") if isinstance(call, Mapping) else None
        if (
            not isinstance(call, Mapping)
            or not isinstance(function, Mapping)
            or call.get("type", "function") != "function"
        ):
            raise _UnfitError("a tool call is not a function call")
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, str) or not isinstance(call.get("id"), str):
            raise _UnfitError("a tool call has no id, name or arguments")
        calls.append({"id": call["id"], "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls


def _answer_message(answer: Mapping[str, Any]) -> dict[str, Any]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise _UnfitError("the answer has no choice")
    choice = choices[0]
    reason = _INCOMPLETE.get(str(choice.get("finish_reason")))
    if reason is not None:
        raise _UnfitError(reason)
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise _UnfitError("the answer has no message")
    if message.get("refusal"):
        raise _UnfitError("the answer is a refusal")
    final: dict[str, Any] = {"role": "assistant"}
    content = _text(message.get("content"))
    if message.get("tool_calls"):
        final["tool_calls"] = _tool_calls(message["tool_calls"])
        if content is not None:
            final["content"] = content
    elif content is None:
        raise _UnfitError("the answer has neither content nor tool calls")
    else:
        final["content"] = content
    return final


def _tools(request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    if request.get("functions") is not None:
        raise _UnfitError("legacy functions")
    tools = request.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise _UnfitError("tools is not a list")
    kept = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(function, Mapping):
            raise _UnfitError("a tool is not a function (only function tools are exported)")
        kept.append({"type": "function", "function": dict(function)})
    return kept
