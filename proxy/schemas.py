"""OpenAI wire types (msgspec): the typed view of a chat request, usage, and the body rewrite for forwarding.

Turnout decides on the typed view and forwards what the client sent: `decode_chat_request()` checks the
few fields the proxy relies on and names the offending `param` when one is wrong; everything else in the
body (unknown fields, nulls, tools, ...) is left to the upstream and forwarded byte for byte unless a
route must change `model` or `stream_options`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from proxy.errors import InvalidRequestError

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ContentPart",
    "ResponseFormat",
    "StreamOptions",
    "Usage",
    "decode_chat_request",
    "rewrite_body",
]


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
    tools: list[msgspec.Raw] | None = None
    functions: list[msgspec.Raw] | None = None
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


_DECODER = msgspec.json.Decoder(ChatRequest)
# msgspec reports "<what went wrong> - at `$.messages[0].role`"; missing fields are named in the message.
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING_FIELD = re.compile(r"missing required field `(?P<field>[^`]+)`")


def _param(message: str) -> str | None:
    path_match = _AT_PATH.search(message)
    path = path_match.group("path") if path_match else ""
    missing = _MISSING_FIELD.search(message)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
    return path or None


def decode_chat_request(raw: bytes) -> ChatRequest:
    """Decode and check a chat request body.

    Raises:
        InvalidRequestError: the body is not JSON, not an object, or `model`/`messages` (or another field
            Turnout reads) is missing or of the wrong type; `param` names the field.
    """
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = _param(message)
        clean = _AT_PATH.sub("", message)
        where = f" (at '{param}')" if param else ""
        raise InvalidRequestError(f"Invalid request body: {clean}{where}.", param=param) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request: it is not valid JSON. "
            "Send a JSON object as described in the OpenAI API reference."
        ) from exc


def rewrite_body(raw: bytes, *, model: str | None = None, include_usage: bool = False) -> bytes:
    """The body to send upstream: `raw` unchanged, except `model` and `stream_options.include_usage`.

    Returns `raw` itself when nothing needs to change, so the common case costs no re-encoding.
    """
    if model is None and not include_usage:
        return raw
    body: dict[str, Any] = msgspec.json.decode(raw)
    changed = False
    if model is not None and body.get("model") != model:
        body["model"] = model
        changed = True
    if include_usage:
        options = body.get("stream_options")
        if not isinstance(options, dict):
            body["stream_options"] = {"include_usage": True}
            changed = True
        elif options.get("include_usage") is not True:
            body["stream_options"] = {**options, "include_usage": True}
            changed = True
    return msgspec.json.encode(body) if changed else raw
