"""OpenAI wire types (msgspec): a chat request decoded once (typed view + raw members), usage, the body rewrite.

Turnout decides on the typed view and forwards what the client sent. `decode_chat_body()` reads the body
once, as plain JSON values, and accepts it only when any later reader (a rewrite, the cache key, the RAG
route, the upstream) can read it too (`proxy.wire.jsonbody`: UTF-8, numbers, nesting), within OpenAI's bounds
on the parameters (`proxy.wire.parameters`), and with the few fields the proxy relies on of the right type. A
body that fails is a 400 naming the problem and, where there is one, the `param`.

What the typed view does not keep (unknown fields, nulls, tools, ...) is left to the upstream and
forwarded byte for byte. A route that must change `model` or `stream_options` (or the RAG route,
`messages`) splices that one top-level member between the others, which are copied as they came
(`Body.replaced`, `proxy.endpoints.chat`): nothing nested is parsed or encoded again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

import msgspec

from proxy.wire.endpoint import Body, ViewT
from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import NOT_JSON, decode_json_object
from proxy.wire.parameters import check_parameters

__all__ = [
    "ChatBody",
    "ChatMessage",
    "ChatRequest",
    "CompletionTokensDetails",
    "ContentPart",
    "PromptTokensDetails",
    "ResponseFormat",
    "StreamOptions",
    "TokenCount",
    "Usage",
    "body_of",
    "decode_chat_body",
    "last_user_text",
    "message_text",
    "typed_view",
]


class ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    """One part of a multi-part message content (`{"type": "text", "text": ...}`, images, ...)."""

    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation message; only the fields routing decisions read."""

    role: str
    content: str | list[ContentPart] | None = None


def message_text(message: ChatMessage) -> str:
    """The text of a message: its string content, or its text parts joined by newlines (images are skipped)."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if part.text is not None)


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """The text of the last `user` message (`message_text`), or "" when there is none.

    The question of a request, as the policy's text and meaning-based conditions, the RAG route's search
    and the semantic cache all read it: one text, so one embedding serves them all.
    """
    for message in reversed(messages):
        if message.role == "user":
            return message_text(message)
    return ""


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
    reasoning_effort: str | None = None
    n: int | None = None
    temperature: float | None = None

    @property
    def wants_usage_chunk(self) -> bool:
        """Whether the caller asked for the final usage chunk of a stream."""
        return bool(self.stream_options and self.stream_options.include_usage)


TokenCount = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
"""A count of tokens as an upstream may report it: never negative (it would refund spend), and exact in a float
(prices and metrics compute in floats and decimals; a JSON reader in JavaScript reads no larger integer exactly)."""


class PromptTokensDetails(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of `prompt_tokens` billed at other rates: read from the cache, audio (both included in the total)."""

    cached_tokens: TokenCount = 0
    audio_tokens: TokenCount = 0


class CompletionTokensDetails(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of `completion_tokens`: reasoning (billed as output, already in the total) and audio."""

    reasoning_tokens: TokenCount = 0
    audio_tokens: TokenCount = 0


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts as the upstream reported them (decoding refuses counts out of `TokenCount`'s range).

    The details are what the bill needs beyond the totals (`proxy.accounting.cost`); the Responses API's
    `input_tokens_details` / `output_tokens_details` are read into the same two (`proxy.endpoints.responses_replay`).
    """

    prompt_tokens: TokenCount = 0
    completion_tokens: TokenCount = 0
    total_tokens: TokenCount = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens read from the prompt cache (at most `prompt_tokens`)."""
        details = self.prompt_tokens_details
        return 0 if details is None else min(details.cached_tokens, self.prompt_tokens)

    @property
    def reasoning_tokens(self) -> int:
        """Completion tokens spent reasoning (part of `completion_tokens`)."""
        details = self.completion_tokens_details
        return 0 if details is None else details.reasoning_tokens


_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


ChatBody = Body[ChatRequest]
"""A chat request body: its bytes, its typed `ChatRequest` view, its raw top-level members."""


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


def typed_view(body: object, view: type[ViewT]) -> ViewT:
    """`body` (plain JSON values) as the typed `view` of its endpoint.

    Raises:
        InvalidRequestError: a field the view reads is missing or of the wrong type; `param` names it.
    """
    try:
        return msgspec.convert(body, view)
    except msgspec.ValidationError as exc:
        message = str(exc)
        param = _param(message)
        clean = _AT_PATH.sub("", message)
        where = f" (at '{param}')" if param else ""
        raise InvalidRequestError(f"Invalid request body: {clean}{where}.", param=param) from exc


def decode_chat_body(raw: bytes) -> ChatBody:
    """Decode and check a chat request body, once.

    Raises:
        InvalidRequestError: the body is not JSON (or not UTF-8), not an object, holds a number out of
            range or nests too deeply, breaks one of OpenAI's bounds, or `model`/`messages` (or another
            field Turnout reads) is missing or of the wrong type; `param` names the field.
    """
    body = decode_json_object(raw)
    check_parameters(body)
    return body_of(raw, typed_view(body, ChatRequest))


def body_of(raw: bytes, view: ViewT) -> Body[ViewT]:
    """The `Body` of an accepted request: its bytes, its typed view, its top-level members as sent."""
    try:
        fields = _FIELDS.decode(raw)
    except msgspec.DecodeError as exc:  # never seen: skipping accepts whatever decoding does (tests say so)
        raise InvalidRequestError(NOT_JSON.format(reason=str(exc))) from exc
    return Body(raw=raw, view=view, fields=fields)
