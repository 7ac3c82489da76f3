"""`RESPONSES`, the codec of `POST /v1/responses`: how a Responses request reads and how its answer replays.

What the pipeline, the cache, the relay and the routes need to know of the Responses API, in one place:

- the typed view (`ResponsesRequest`): `model`, `input` as a string or items, `instructions`, `tools`,
  `text.format`, `reasoning`, `metadata`, ...; what Turnout does not read (`store`, `background`,
  `include`, `conversation`, ...) reaches the upstream byte for byte;
- the policy features: the conversation is `instructions` (as a system message) then the input's
  messages, so text conditions, the token estimate and the question read them as they read chat's;
  `has_tools` from `tools`, `response_format` from `text.format.type`, `reasoning_effort`;
- the stream: typed events (`event: response.output_text.delta` ...), each with its `sequence_number`,
  ending at `response.completed`, `response.incomplete` or `response.failed`, with no `[DONE]`; the usage is
  in the last one's `response.usage`; an `error` event is the upstream's error; Turnout's own error
  after the first byte is an `error` event numbered after the last event relayed;
- the cache: deterministic means `temperature: 0` (and not `background`); the two stored forms replay
  both ways (`proxy.endpoints.responses_replay`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

import msgspec

from policies import RequestFeatures
from proxy.endpoints import chat, responses_replay
from proxy.endpoints.base import Replay, UsageFound
from proxy.endpoints.responses_replay import EventView, ResponseView, encode_typed, output_texts, usage_of
from proxy.wire.answers import UnreadableAnswerError, read_answer
from proxy.wire.content import Content, answer_texts
from proxy.wire.endpoint import Body, StreamCut
from proxy.wire.errors import InvalidRequestError, NotFoundError, ProxyError, UpstreamError, error_body
from proxy.wire.jsonbody import NOT_JSON, decode_json_object
from proxy.wire.parameters import check_parameters
from proxy.wire.schemas import ChatMessage, ContentPart, Usage, last_user_text
from proxy.wire.sse import event_data, split_events
from routes import Call

__all__ = [
    "ANSWER_FIELDS",
    "END_TYPES",
    "IGNORED_FIELDS",
    "RESPONSES",
    "ResponsesBody",
    "ResponsesCodec",
    "ResponsesRequest",
    "conversation",
]

ANSWER_FIELDS = frozenset(
    {
        "background",  # a queued response, not an answer
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "reasoning",
        "service_tier",
        "store",  # whether the replayed id can be retrieved or continued from
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
    }
)
"""Request fields that change the answer: each one's value is part of the cache key."""

IGNORED_FIELDS = chat.IGNORED_FIELDS - {"store"}
"""Request fields that do not change the answer: chat's, but `store` (whether a replayed id can be retrieved
and continued from) is keyed. A field in neither set (a new one) is keyed too."""

END_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})
"""The events that end a Responses stream."""

# An end event's type; escaped text cannot match.
_END = re.compile(rb'"type"\s*:\s*"response\.(?:completed|incomplete|failed)"')
_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_EMPTY = msgspec.Raw(b'""')
_ENCODE = msgspec.json.encode
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


class InputItem(msgspec.Struct, frozen=True, kw_only=True):
    """One item of `input` as far as Turnout reads it: a message's role and content (other items pass)."""

    type: str | None = None
    role: str | None = None
    content: str | list[ContentPart] | None = None


class TextFormat(msgspec.Struct, frozen=True, kw_only=True):
    type: str


class TextParam(msgspec.Struct, frozen=True, kw_only=True):
    format: TextFormat | None = None


class ReasoningParam(msgspec.Struct, frozen=True, kw_only=True):
    effort: str | None = None


class ResponsesRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The typed view of `POST /v1/responses` that Turnout decides on."""

    model: str
    input: str | Annotated[list[InputItem], msgspec.Meta(max_length=100_000)] | None = None
    instructions: str | None = None
    tools: list[object] | None = None
    text: TextParam | None = None
    reasoning: ReasoningParam | None = None
    metadata: dict[str, str] | None = None
    stream: bool | None = None
    temperature: float | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    background: bool | None = None
    include: list[str] | None = None
    user: str | None = None


ResponsesBody = Body[ResponsesRequest]
"""A Responses request body: its bytes, its typed view, its raw top-level members."""


def conversation(request: ResponsesRequest) -> list[ChatMessage]:
    """The request as chat messages: `instructions` as a system message, then the input's messages.

    What policies, the token estimate and the question read; items that are not messages (function
    calls, their outputs, reasoning) carry no role and are left out.
    """
    messages = [] if request.instructions is None else [ChatMessage(role="system", content=request.instructions)]
    if isinstance(request.input, str):
        messages.append(ChatMessage(role="user", content=request.input))
    elif request.input is not None:
        messages.extend(
            ChatMessage(role=item.role, content=item.content)
            for item in request.input
            if item.role is not None and item.type in (None, "message")
        )
    return messages


def _typed(body: object) -> ResponsesRequest:
    try:
        return msgspec.convert(body, ResponsesRequest)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _AT_PATH.search(message)
        param = found.group("path") or None if found else None
        if param is None and "missing required field `model`" in message:
            param = "model"
        where = f" (at '{param}')" if param else ""
        raise InvalidRequestError(f"Invalid request body: {_AT_PATH.sub('', message)}{where}.", param=param) from exc


def _sequence_after(events: bytes) -> int:
    """The `sequence_number` after the last one in `events` (0 when none is there)."""
    numbers = _SEQUENCE.findall(events[-4096:]) or _SEQUENCE.findall(events)
    return int(numbers[-1]) + 1 if numbers else 0


class _Typed(msgspec.Struct):
    type: str | None = None


_TYPE = msgspec.json.Decoder(_Typed)


def _type_of(event: bytes) -> str | None:
    """An event's `type`, from its data (None: a comment, or data that is not a typed event)."""
    data = event_data(event)
    if not data:
        return None
    try:
        return _TYPE.decode(data).type
    except msgspec.DecodeError:
        return None


def _as_error(data: bytes) -> bytes:
    """An `error` event's data (`{"type": "error", "message", "code", "param"}`) as an OpenAI error body."""
    try:
        fields = msgspec.json.decode(data, type=dict[str, object])
    except msgspec.DecodeError:
        return error_body("The upstream failed mid-stream.", "server_error")
    nested = fields.get("error")
    detail = nested if isinstance(nested, dict) else fields
    message = detail.get("message")
    code, param = detail.get("code"), detail.get("param")
    return error_body(
        message if isinstance(message, str) else "no reason given",
        "server_error",
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
    )


class ResponsesCodec:
    """The Responses API (`response` objects; streams of typed events ending in `response.completed`)."""

    __slots__ = ()

    kind = "responses"
    path = ("responses",)
    ignored_fields = IGNORED_FIELDS
    end_event = b""
    """None: a Responses stream ends with its last typed event (`ends` finds it), not with a marker."""

    def __repr__(self) -> str:
        return "RESPONSES"

    def decode(self, raw: bytes) -> ResponsesBody:
        """The body read and checked once: JSON, OpenAI's bounds (`temperature`, `top_p`, `metadata` ...), the view.

        Raises:
            InvalidRequestError: not JSON, not an object, a bound broken, a field Turnout reads of the wrong type.
        """
        body = decode_json_object(raw)
        check_parameters(body)
        request = _typed(body)
        try:
            fields = _FIELDS.decode(raw)
        except msgspec.DecodeError as exc:  # never seen: what decodes whole decodes by member
            raise InvalidRequestError(NOT_JSON.format(reason=str(exc))) from exc
        return Body(raw=raw, view=request, fields=fields)

    def requested_model(self, body: ResponsesBody) -> str:
        """The request's `model`."""
        return body.view.model

    def streams(self, body: ResponsesBody) -> bool:
        """`stream: true`."""
        return bool(body.view.stream)

    def question(self, body: ResponsesBody) -> str:
        """The text of the input's last user message (a string input is one)."""
        return last_user_text(conversation(body.view))

    def features(self, call: Call[ResponsesRequest]) -> RequestFeatures:
        """The policy features: the conversation as chat's, tools, `text.format`, reasoning, metadata."""
        request = call.request
        text_format = request.text.format if request.text is not None else None
        return RequestFeatures(
            model=request.model,
            messages=conversation(request),
            headers={name.lower(): value for name, value in call.headers.items()},
            user=request.user,
            metadata=request.metadata or {},
            caller=call.caller,
            team=call.team,
            stream=bool(request.stream),
            temperature=request.temperature,
            has_tools=bool(request.tools),
            response_format=text_format.type if text_format is not None else None,
            reasoning_effort=request.reasoning.effort if request.reasoning is not None else None,
        )

    def upstream_body(self, body: ResponsesBody, *, model: str | None, stream: bool) -> bytes:
        """`raw` unchanged but for `model` (a Responses stream always reports its usage)."""
        if model is None or body.view.model == model:
            return body.raw
        return body.replaced({"model": msgspec.Raw(_ENCODE(model))}).raw

    def read_answer(self, content: bytes) -> tuple[str | None, Usage | None]:
        """A `Response`'s model and usage (input tokens as prompt, output tokens as completion)."""
        _, view = read_answer(content, ResponseView)
        return view.model, usage_of(view)

    def cut(self, events: bytes) -> StreamCut:
        """The events up to the end event (what follows dropped), an unreadable event, or an `error` event."""
        parts = split_events(events)
        kept = 0
        for index, event in enumerate(parts):
            data = event_data(event)
            if not data:  # comments carry no event
                continue
            try:
                _, view = read_answer(data, EventView)
            except UnreadableAnswerError as exc:
                return StreamCut(_joined(parts[:index]), unreadable=str(exc))
            if view.type == "error":
                return StreamCut(_joined(parts[:index]), error=_as_error(data))
            kept = index + 1
            if view.type in END_TYPES:
                return StreamCut(_joined(parts[:kept]), ended=True)
        return StreamCut(events)

    def deterministic(self, body: ResponsesBody) -> bool:
        """`temperature: 0`, unless in the `background` (whose answer is a queued response)."""
        return body.view.temperature == 0 and not body.view.background

    def cache_context(self, body: ResponsesBody) -> Mapping[str, msgspec.Raw] | None:
        """When the input ends with the user's message: the fields with the input before it."""
        request = body.view
        if isinstance(request.input, str):
            return {**body.fields, "input": _EMPTY}
        if not request.input or request.input[-1].role != "user":
            return None
        raw = _ITEMS.decode(body.fields["input"])
        return {**body.fields, "input": msgspec.Raw(b"[" + b",".join(raw[:-1]) + b"]")}

    def wants_usage(self, body: ResponsesBody) -> bool:
        """Always: the usage is part of `response.completed`, which every stream keeps."""
        return True

    def stored(self, answer: bytes) -> bytes:
        """`R` + the `Response`."""
        return responses_replay.entry(responses_replay.RESPONSE, answer)

    def stored_stream(self, events: bytes) -> bytes | None:
        """`E` + the events, when the last one is `response.completed`."""
        if _type_of(split_events(events)[-1] if events.strip() else b"") != "response.completed":
            return None
        return responses_replay.entry(responses_replay.STREAM, events)

    def replay(self, stored: bytes, *, stream: bool, wants_usage: bool) -> Replay:
        """`proxy.endpoints.responses_replay.replay` (the usage is always in the stream)."""
        return responses_replay.replay(stored, stream=stream)

    def replayable(self, stored: bytes) -> bool:
        """`proxy.endpoints.responses_replay.replayable`."""
        return responses_replay.replayable(stored)

    def take_usage(self, events: bytes, *, keep: bool) -> UsageFound:
        """The usage of the end event's `response`; no event is dropped (`keep` has nothing to keep apart).

        Raises:
            UpstreamError: the end event cannot be read.
        """
        if not _END.search(events):  # every run but the last passes untouched
            return UsageFound(events)
        for event in reversed(split_events(events)):
            if _type_of(event) in END_TYPES:
                data = event_data(event) or b""
                try:
                    _, view = read_answer(data, EventView)
                except UnreadableAnswerError as exc:
                    raise UpstreamError(f"The upstream sent an end event that Turnout cannot read: {exc}.") from None
                response = view.response
                return UsageFound(events, usage_of(response), response.model if response is not None else None)
        return UsageFound(events)

    def ends(self, events: bytes) -> bool:
        """Whether the last event of `events` (comments aside) ends the stream: an end event or an `error`."""
        tail = events.rstrip(b"\n")
        while tail:
            start = tail.rfind(b"\n\n") + 2 if b"\n\n" in tail else 0
            kind = _type_of(tail[start:])
            if kind is not None:
                return kind in END_TYPES or kind == "error"
            tail = tail[:start].rstrip(b"\n")
        return False

    def error_event(self, error: ProxyError) -> bytes:
        """OpenAI's `error` event (`code`, `message`, `param`), numbered 0 (see `error_event_after`)."""
        return self.error_event_after(error, b"")

    def error_event_after(self, error: ProxyError, events: bytes) -> bytes:
        """The `error` event that follows `events` (the last ones relayed): numbered after them."""
        event = {"type": "error", "code": error.instance_code or error.type, "message": error.message}
        return encode_typed({**event, "param": error.param, "sequence_number": _sequence_after(events)})

    def content(self, body: ResponsesBody, answer: bytes | None) -> Content:
        """Its conversation (`conversation`), and each output message's text."""
        return Content(messages=conversation(body.view), answer=answer_texts(answer, ResponseView, output_texts))

    def upstream_error(self, body: ResponsesBody, error: ProxyError) -> ProxyError:
        """An upstream's 404 for a request continuing a stored response: that response is not found there."""
        previous = body.view.previous_response_id
        if previous is None or error.upstream_status != 404:
            return error
        return NotFoundError(f"Previous response with id '{previous}' not found.", param="previous_response_id")


def _joined(events: list[bytes]) -> bytes:
    return b"".join(event + b"\n\n" for event in events)


RESPONSES = ResponsesCodec()
"""The Responses codec (stateless: one for the process)."""
