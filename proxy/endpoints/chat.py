"""`CHAT`, the codec of `POST /v1/chat/completions`: how a chat request reads and how its answer replays.

What the pipeline, the cache, the relay and the routes need to know of chat completions, in one place:
the typed view and the policy features, the upstream body (`model` rewritten, `include_usage` asked for on
a stream), the fields that change the answer, the usage chunk, `data: [DONE]`, and the two stored forms
(`proxy.endpoints.chat_replay`).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from policies import RequestFeatures, extract_features
from proxy.endpoints import chat_replay, framing
from proxy.endpoints.base import Replay, UsageFound
from proxy.wire.answers import ChunkView, CompletionView, read_answer
from proxy.wire.content import Content, answer_texts
from proxy.wire.endpoint import Body, StreamCut
from proxy.wire.errors import ProxyError
from proxy.wire.schemas import ChatBody, ChatRequest, Usage, decode_chat_body, last_user_text
from proxy.wire.sse import DONE_EVENT, encode_event
from routes import ChatCall

__all__ = ["ANSWER_FIELDS", "CHAT", "IGNORED_FIELDS", "ChatCodec", "ask_for_usage", "asks_one_answer"]

ANSWER_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "verbosity",
        "web_search_options",
    }
)
"""Request fields that change the answer: each one's value is part of the key."""

IGNORED_FIELDS = frozenset(
    {
        "metadata",  # labels for the caller's own bookkeeping
        "prompt_cache_key",  # the upstream's prompt cache, not the answer
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",  # abuse monitoring
        "store",  # whether OpenAI keeps the completion
        "stream",  # a hit replays in either form
        "stream_options",  # likewise: the usage chunk is added or left out on replay
        "user",  # abuse monitoring; tenants are keyed separately
    }
)
"""Request fields that do not change the answer. A field in neither set (a new one) is keyed too."""

_ENCODE = msgspec.json.encode
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_MESSAGES = msgspec.json.Decoder(list[msgspec.Raw])
_USAGE_ONLY = msgspec.Raw(b'{"include_usage":true}')
_TRUE = msgspec.Raw(b"true")


def asks_one_answer(temperature: float | None, fields: Mapping[str, msgspec.Raw]) -> bool:
    """Whether a request's sampling is fixed: `temperature: 0`, or a `seed` that is not null."""
    seed = fields.get("seed")
    return temperature == 0 or (seed is not None and bytes(seed) != b"null")


def ask_for_usage(fields: Mapping[str, msgspec.Raw], members: dict[str, msgspec.Raw]) -> None:
    """Put in `members` the `stream_options` that ask a stream for its usage chunk (`include_usage`).

    The caller's other stream options are kept (an accepted body's members always decode again).
    """
    options = fields.get("stream_options")
    if options is None or bytes(options) == b"null":
        members["stream_options"] = _USAGE_ONLY
    else:
        members["stream_options"] = msgspec.Raw(_ENCODE({**_FIELDS.decode(options), "include_usage": _TRUE}))


class ChatCodec:
    """Chat completions (`chat.completion` answers, `chat.completion.chunk` streams ending in `[DONE]`)."""

    __slots__ = ()

    kind = "chat"
    path = ("chat", "completions")
    ignored_fields = IGNORED_FIELDS
    end_event = DONE_EVENT

    def __repr__(self) -> str:
        return "CHAT"

    def decode(self, raw: bytes) -> ChatBody:
        """The body read and checked once (`proxy.wire.schemas.decode_chat_body`)."""
        return decode_chat_body(raw)

    def requested_model(self, body: Body[ChatRequest]) -> str:
        """The request's `model`."""
        return body.view.model

    def streams(self, body: Body[ChatRequest]) -> bool:
        """`stream: true`."""
        return bool(body.view.stream)

    def question(self, body: Body[ChatRequest]) -> str:
        """The last user message's text."""
        return last_user_text(body.view.messages)

    def features(self, call: ChatCall) -> RequestFeatures:
        """The request's policy features (`policies.extract_features`)."""
        return extract_features(call.request, call.headers, call.caller, call.team)

    def upstream_body(self, body: Body[ChatRequest], *, model: str | None, stream: bool) -> bytes:
        """`raw` unchanged, except `model` and, for a stream, `stream_options.include_usage`.

        Returns `raw` itself when nothing needs to change, so the common case costs no re-encoding; when
        something does, only that top-level member is new and every other one is copied as it came.
        """
        request = body.view
        members: dict[str, msgspec.Raw] = {}
        if model is not None and request.model != model:
            members["model"] = msgspec.Raw(_ENCODE(model))
        if stream and not request.wants_usage_chunk:
            ask_for_usage(body.fields, members)
        return body.replaced(members).raw if members else body.raw

    def read_answer(self, content: bytes) -> tuple[str | None, Usage | None]:
        """A `chat.completion`'s model and usage, read whole (`proxy.wire.answers`)."""
        _, view = read_answer(content, CompletionView)
        return view.model, view.usage

    def cut(self, events: bytes) -> StreamCut:
        """The events up to `[DONE]` (normalised; anything after it dropped), an unreadable chunk or an error."""
        return framing.cut(events, ChunkView)

    def deterministic(self, body: Body[ChatRequest]) -> bool:
        """`temperature: 0`, or a `seed` that is not null."""
        return asks_one_answer(body.view.temperature, body.fields)

    def cache_context(self, body: Body[ChatRequest]) -> Mapping[str, msgspec.Raw] | None:
        """When the last message is the user's: the fields with the messages before it."""
        if body.view.messages[-1].role != "user":
            return None
        raw = _MESSAGES.decode(body.fields["messages"])
        return {**body.fields, "messages": msgspec.Raw(b"[" + b",".join(raw[:-1]) + b"]")}

    def wants_usage(self, body: Body[ChatRequest]) -> bool:
        """`stream_options.include_usage`."""
        return body.view.wants_usage_chunk

    def stored(self, answer: bytes) -> bytes:
        """`C` + the completion."""
        return chat_replay.entry(chat_replay.COMPLETION, answer)

    def stored_stream(self, events: bytes) -> bytes | None:
        """`S` + the events, when they end with `[DONE]`."""
        return chat_replay.entry(chat_replay.STREAM, events) if events.endswith(DONE_EVENT) else None

    def replay(self, stored: bytes, *, stream: bool, wants_usage: bool) -> Replay:
        """`proxy.endpoints.chat_replay.replay`."""
        return chat_replay.replay(stored, stream=stream, wants_usage=wants_usage)

    def replayable(self, stored: bytes) -> bool:
        """`proxy.endpoints.chat_replay.replayable`."""
        return chat_replay.replayable(stored)

    def take_usage(self, events: bytes, *, keep: bool) -> UsageFound:
        """The usage chunk's usage; the usage-only chunk dropped unless `keep` (`proxy.endpoints.framing`)."""
        return framing.take_usage(events, ChunkView, keep=keep)

    def ends(self, events: bytes) -> bool:
        """Whether `events` end with `data: [DONE]`."""
        return events.endswith(DONE_EVENT)

    def error_event(self, error: ProxyError) -> bytes:
        """`data: {"error": ...}`."""
        return encode_event(error.body())

    def content(self, body: ChatBody, answer: bytes | None) -> Content:
        """Its messages, and each choice's message text."""
        return Content(messages=body.view.messages, answer=answer_texts(answer, CompletionView, _choice_texts))

    def upstream_error(self, body: ChatBody, error: ProxyError) -> ProxyError:
        """`error` as it is: a chat request names nothing an upstream holds."""
        return error


def _choice_texts(answer: CompletionView) -> list[str | None]:
    return [choice.message.content if choice.message else None for choice in answer.choices or ()]


CHAT = ChatCodec()
"""The chat completions codec (stateless: one for the process)."""
