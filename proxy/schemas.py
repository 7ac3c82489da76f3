"""OpenAI wire types (msgspec): a chat request decoded once (typed view + raw members), usage, the body rewrite.

Turnout decides on the typed view and forwards what the client sent. `decode_chat_body()` reads the body
once, as plain JSON values, and accepts it only when any later reader (a rewrite, the cache key, the RAG
route, the upstream) can read it too: valid UTF-8, numbers a 64-bit float holds (integers of at most
`sys.get_int_max_str_digits()` digits), arrays and objects nested at most `MAX_DEPTH` levels, OpenAI's
bounds on the parameters (`proxy.parameters`), and the few fields the proxy relies on of the right type.
A body that fails is a 400 naming the problem and, where there is one, the `param`.

What the typed view does not keep (unknown fields, nulls, tools, ...) is left to the upstream and
forwarded byte for byte. A route that must change `model` or `stream_options` (or the RAG route,
`messages`) splices that one top-level member between the others, which are copied as they came
(`ChatBody.rewritten`, `ChatBody.replaced`): nothing nested is parsed or encoded again.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from proxy.errors import InvalidRequestError
from proxy.parameters import check_parameters

__all__ = [
    "MAX_DEPTH",
    "ChatBody",
    "ChatMessage",
    "ChatRequest",
    "ContentPart",
    "ResponseFormat",
    "StreamOptions",
    "Usage",
    "decode_chat_body",
    "decode_json_object",
]

MAX_DEPTH = 128
"""The deepest a request body may nest arrays and objects (the body itself is level 1).

Far beyond any real request (a JSON schema of ten nested objects is ~25 levels), and far below Python's
recursion limit, so that no later reader of an accepted body ever runs out of stack."""


class ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    """One part of a multi-part message content (`{"type": "text", "text": ...}`, images, ...)."""

    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation message; only the fields routing decisions read."""

    role: str
    content: str | list[ContentPart] | None = None


class ResponseFormat(msgspec.Struct, frozen=True, kw_only=True):
    """`response_format`: `text`, `json_object` or `json_schema`."""

    type: str


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    """`stream_options`: whether the caller wants the final usage chunk."""

    include_usage: bool | None = None


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The typed view of `POST /v1/chat/completions` that Turnout decides on."""

    model: str
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    tools: list[object] | None = None
    functions: list[object] | None = None
    response_format: ResponseFormat | None = None
    n: int | None = None
    temperature: float | None = None

    @property
    def wants_usage_chunk(self) -> bool:
        """Whether the caller asked for the final usage chunk of a stream."""
        return bool(self.stream_options and self.stream_options.include_usage)


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts as the upstream reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


_JSON = msgspec.json.Decoder()
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ENCODE = msgspec.json.encode
_USAGE_ONLY = msgspec.Raw(b'{"include_usage":true}')
_TRUE = msgspec.Raw(b"true")


@dataclass(frozen=True, slots=True)
class ChatBody:
    """A chat request body, decoded once: its bytes, its typed view, and its top-level members as sent."""

    raw: bytes
    """The body exactly as the client sent it."""
    request: ChatRequest
    """The typed view, for decisions."""
    fields: Mapping[str, msgspec.Raw]
    """Each top-level member's value as the raw JSON it was sent as (for cache keys and rewrites)."""

    def replaced(self, members: Mapping[str, msgspec.Raw]) -> ChatBody:
        """This body with `members` (raw JSON values) put in place of, or after, its own; the typed view kept."""
        fields = {**self.fields, **members}
        return ChatBody(raw=_ENCODE(fields), request=self.request, fields=fields)

    def rewritten(self, *, model: str | None = None, include_usage: bool = False) -> bytes:
        """The body to send upstream: `raw` unchanged, except `model` and `stream_options.include_usage`.

        Returns `raw` itself when nothing needs to change, so the common case costs no re-encoding; when
        something does, only that top-level member is new and every other one is copied as it came.
        """
        members: dict[str, msgspec.Raw] = {}
        if model is not None and self.request.model != model:
            members["model"] = msgspec.Raw(_ENCODE(model))
        if include_usage and not self.request.wants_usage_chunk:
            options = self.fields.get("stream_options")
            if options is None or self.request.stream_options is None:  # absent, or null
                members["stream_options"] = _USAGE_ONLY
            else:  # keep the caller's other options (an accepted body's members always decode again)
                members["stream_options"] = msgspec.Raw(_ENCODE({**_FIELDS.decode(options), "include_usage": _TRUE}))
        return self.replaced(members).raw if members else self.raw


# msgspec reports "<what went wrong> - at `$.messages[0].role`"; missing fields are named in the message.
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING_FIELD = re.compile(r"missing required field `(?P<field>[^`]+)`")
_NOT_JSON = (
    "We could not parse the JSON body of your request: it is not valid JSON ({reason}). "
    "Send a JSON object as described in the OpenAI API reference."
)


def _param(message: str) -> str | None:
    path_match = _AT_PATH.search(message)
    path = path_match.group("path") if path_match else ""
    missing = _MISSING_FIELD.search(message)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
    return path or None


def _typed(body: object) -> ChatRequest:
    try:
        return msgspec.convert(body, ChatRequest)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = _param(message)
        clean = _AT_PATH.sub("", message)
        where = f" (at '{param}')" if param else ""
        raise InvalidRequestError(f"Invalid request body: {clean}{where}.", param=param) from exc


def _unreadable(raw: bytes, error: msgspec.DecodeError) -> InvalidRequestError:
    """The error for a body the JSON decoder refused: which member, and why, when the syntax is sound.

    msgspec skips a value it does not keep without checking its strings' UTF-8 or its numbers' range,
    so the members split that way, then decoded one by one, find the member at fault.
    """
    try:
        return _member_at_fault(_FIELDS.decode(raw), error)
    except msgspec.DecodeError:
        return InvalidRequestError(_NOT_JSON.format(reason=_AT_PATH.sub("", str(error))))
    except RecursionError:  # a body with two faults: this one is as good a reason as the other
        return _too_deep(None)


def _member_at_fault(fields: Mapping[str, msgspec.Raw], error: msgspec.DecodeError) -> InvalidRequestError:
    for name, value in fields.items():
        try:
            _JSON.decode(value)
        except msgspec.ValidationError as exc:  # the only ones plain JSON values can fail: numbers
            integer = "Integer" in str(exc)
            what = f"an integer of more than {sys.get_int_max_str_digits()} digits" if integer else "a number"
            where = "" if integer else " (a JSON number must fit in a 64-bit float)"
            message = f"Invalid request body: '{name}' holds {what}, which is out of range{where}."
            return InvalidRequestError(message, param=name, code="number_out_of_range")
        except msgspec.DecodeError as exc:
            if "UTF-8" not in str(exc):
                return InvalidRequestError(_NOT_JSON.format(reason=_AT_PATH.sub("", str(exc))), param=name)
            message = f"Invalid request body: '{name}' holds a string that is not valid UTF-8."
            return InvalidRequestError(message, param=name, code="invalid_utf8")
    return InvalidRequestError(_NOT_JSON.format(reason=_AT_PATH.sub("", str(error))))


def _too_deep(name: str | None) -> InvalidRequestError:
    where = f"'{name}'" if name is not None else "it"
    message = f"Invalid request body: {where} nests arrays and objects more than {MAX_DEPTH} levels deep."
    return InvalidRequestError(message, param=name, code="nested_too_deeply")


_CONTAINERS = frozenset({dict, list})
_COUNTED = 4096
"""Up to this size a body's `[` and `{` are counted before its levels are walked."""


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value`, a decoded JSON value, nests arrays and objects more than `limit` levels deep.

    Level by level, without recursion (the point is not to need the stack), in a plain loop: per value
    it costs about three times what decoding a number did, and a fraction of what an array or object did.
    """
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(limit):
        if not level:
            return False
        found = []
        for node in level:
            for member in node.values() if type(node) is dict else node:
                if type(member) in _CONTAINERS:
                    found.append(member)
        level = found
    return bool(level)


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object, as plain values, with the checks every body gets.

    Raises:
        InvalidRequestError: the body is not JSON (or not UTF-8), not an object, holds a number out of
            range, or nests more than `MAX_DEPTH` levels; `param` names the top-level member at fault.
    """
    try:
        body = _JSON.decode(raw)
    except RecursionError:  # deeper than Python's stack, let alone MAX_DEPTH
        raise _too_deep(None) from None
    except msgspec.DecodeError as exc:
        raise _unreadable(raw, exc) from exc
    if not isinstance(body, dict):
        kind = {list: "array", str: "str", bool: "bool", int: "int", float: "float"}.get(type(body), "null")
        raise InvalidRequestError(f"Invalid request body: Expected `object`, got `{kind}`.")
    # A small body with fewer openers than the limit cannot nest deeper: counting them costs less than the walk.
    if (len(raw) > _COUNTED or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH) and _deeper_than(body, MAX_DEPTH):
        name = next((name for name, value in body.items() if _deeper_than(value, MAX_DEPTH - 1)), None)
        raise _too_deep(name)
    return body


def decode_chat_body(raw: bytes) -> ChatBody:
    """Decode and check a chat request body, once.

    Raises:
        InvalidRequestError: the body is not JSON (or not UTF-8), not an object, holds a number out of
            range or nests too deeply, breaks one of OpenAI's bounds, or `model`/`messages` (or another
            field Turnout reads) is missing or of the wrong type; `param` names the field.
    """
    body = decode_json_object(raw)
    check_parameters(body)
    request = _typed(body)
    try:
        fields = _FIELDS.decode(raw)
    except msgspec.DecodeError as exc:  # never seen: skipping accepts whatever decoding does (tests say so)
        raise InvalidRequestError(_NOT_JSON.format(reason=str(exc))) from exc
    return ChatBody(raw=raw, request=request, fields=fields)
