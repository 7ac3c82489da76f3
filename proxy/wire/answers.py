"""An upstream's answer as Turnout reads it: a `chat.completion` or a stream chunk, checked whole before any use.

What an upstream sends back is read as a caller's body is (`proxy.wire.jsonbody.read_json`: JSON, UTF-8,
numbers, nesting), then checked against the shape every later reader relies on: the pipeline (`model`,
`usage`), the access log (the messages' content) and the cache's replay (the choices, their messages
or deltas, tool calls, logprobs). What no reader looks at (ids, unknown fields) is left as it came.

An answer that fails is the upstream's fault, whoever reads it: `UnreadableAnswerError`, which a route turns
into a 502 `upstream_error` (an error event once a stream has begun) and the cache into a miss. Its
message says what is wrong and where, and quotes nothing of the answer.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from proxy.wire.jsonbody import UnreadableJSONError, read_json
from proxy.wire.schemas import Usage

__all__ = [
    "Choice",
    "ChunkChoice",
    "ChunkView",
    "CompletionView",
    "Delta",
    "FunctionCall",
    "Logprobs",
    "Message",
    "ToolCall",
    "UnreadableAnswerError",
    "read_answer",
]

T = TypeVar("T")


class UnreadableAnswerError(ValueError):
    """An upstream's answer (or a cache entry made of one) that Turnout cannot read, with the reason."""


class FunctionCall(msgspec.Struct, frozen=True):
    """A (part of a) function call: its name and arguments are text."""

    name: str | None = None
    arguments: str | None = None


class ToolCall(msgspec.Struct, frozen=True):
    """A (part of a) tool call."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class Logprobs(msgspec.Struct, frozen=True):
    """A choice's logprobs: lists, passed on whole."""

    content: list[Any] | None = None
    refusal: list[Any] | None = None


class Message(msgspec.Struct, frozen=True):
    """A completion choice's message."""

    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None


class Choice(msgspec.Struct, frozen=True):
    """One choice of a completion."""

    index: int = 0
    message: Message | None = None
    logprobs: Logprobs | None = None
    finish_reason: str | None = None


class CompletionView(msgspec.Struct, frozen=True):
    """A `chat.completion` as far as Turnout reads it."""

    model: str | None = None
    choices: list[Choice] | None = None
    usage: Usage | None = None


class Delta(Message, frozen=True):
    """What one chunk adds to a choice's message (the same fields, each a part)."""


class ChunkChoice(msgspec.Struct, frozen=True):
    """One choice of a stream chunk."""

    index: int = 0
    delta: Delta | None = None
    logprobs: Logprobs | None = None
    finish_reason: str | None = None


class ChunkView(msgspec.Struct, frozen=True):
    """A `chat.completion.chunk` as far as Turnout reads it (the usage chunk has no choices)."""

    model: str | None = None
    choices: list[ChunkChoice] | None = None
    usage: Usage | None = None


_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def read_answer(raw: bytes, shape: type[T]) -> tuple[dict[str, Any], T]:
    """`raw` (one JSON object from an upstream) as plain values and as the view `shape`, both checked.

    Raises:
        UnreadableAnswerError: `raw` is not JSON an object of that shape; the message says why and where.
    """
    try:
        value = read_json(raw)
    except UnreadableJSONError as exc:
        raise UnreadableAnswerError(str(exc)) from None
    if not isinstance(value, dict):
        raise UnreadableAnswerError(f"it is {_KINDS.get(type(value), 'null')}, not an object")
    try:
        return value, msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:  # "Expected `str | null`, got `int` - at `$.model`": no value quoted
        reason = str(exc).replace(" - at ", " at ")
        raise UnreadableAnswerError(reason[:1].lower() + reason[1:]) from None
