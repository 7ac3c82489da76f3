"""`COMPLETIONS`, the codec of the legacy `POST /v1/completions`: `text_completion` answers, streams ending in `[DONE]`.

The request is checked as OpenAI checks it (`proxy.wire.inputs`: `prompt` a string, strings, token arrays;
OpenAI's bounds on `n`, `temperature`, `seed`, ...; `max_tokens` from 0, which with `echo` scores a
prompt; `logprobs` 0-5) and forwarded as it came, with `model` rewritten when its route names one and,
on a stream, `stream_options.include_usage` asked for (as chat does), so that every answer is priced.

A stream is `[DONE]`-framed as chat's is (`proxy.endpoints.framing`): one `text_completion` object per
event, the usage in a last one without choices. Stored answers replay in either form: a stream adds up
to one completion (each choice's text and logprobs joined, its last finish reason), and a completion
plays as the chunks a live stream of it would have had (its text by word; with logprobs, in one chunk).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from policies import RequestFeatures
from proxy.endpoints import framing
from proxy.endpoints.base import Replay, UsageFound
from proxy.endpoints.chat import ask_for_usage, asks_one_answer
from proxy.endpoints.embeddings import text_features
from proxy.endpoints.framing import keep_envelope
from proxy.wire.answers import read_answer
from proxy.wire.content import Content, answer_texts
from proxy.wire.endpoint import Body, StreamCut
from proxy.wire.errors import ProxyError
from proxy.wire.inputs import CompletionsRequest, decode_completions_body, input_text
from proxy.wire.schemas import Usage
from proxy.wire.sse import DONE_EVENT, encode_event
from routes import Call

__all__ = ["ANSWER_FIELDS", "COMPLETIONS", "IGNORED_FIELDS", "CompletionsCodec", "TextCompletionView"]

ANSWER_FIELDS = frozenset(
    {
        "best_of",
        "echo",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "model",
        "n",
        "presence_penalty",
        "prompt",
        "seed",
        "stop",
        "suffix",
        "temperature",
        "top_p",
    }
)
"""Request fields that change the answer: each one's value is part of the key."""
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user"})
"""Request fields that do not change the answer (a hit replays in either form). A field in neither set is keyed."""

_WORD = re.compile(r"\S+\s*|\s+")
_ENVELOPE = ("id", "created", "model", "system_fingerprint")
_LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


class TextLogprobs(msgspec.Struct, frozen=True):
    """A choice's logprobs: lists, passed on whole."""

    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] | None = None


class TextChoice(msgspec.Struct, frozen=True):
    """One choice of a completion, or the part of it one chunk adds."""

    index: int = 0
    text: str | None = None
    logprobs: TextLogprobs | None = None
    finish_reason: str | None = None


class TextCompletionView(msgspec.Struct, frozen=True):
    """A `text_completion` (a whole answer or a chunk: they share one shape) as far as Turnout reads it."""

    model: str | None = None
    choices: list[TextChoice] | None = None
    usage: Usage | None = None


def _assemble(chunks: list[dict[str, Any]]) -> bytes:
    """The `text_completion` a finished stream's chunks (their shape checked) add up to."""
    body: dict[str, Any] = {"object": "text_completion"}
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, dict[str, list[Any]]] = {}
    finish: dict[int, str | None] = {}
    usage = None
    for chunk in chunks:
        keep_envelope(body, chunk, _ENVELOPE)
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            texts.setdefault(index, []).append(choice.get("text") or "")
            finish[index] = choice.get("finish_reason") or finish.get(index)
            if choice.get("logprobs"):
                joined = logprobs.setdefault(index, {name: [] for name in _LOGPROB_LISTS})
                for name in _LOGPROB_LISTS:
                    joined[name].extend(choice["logprobs"].get(name) or [])
        usage = chunk.get("usage") or usage
    body["choices"] = [
        {"text": "".join(texts[i]), "index": i, "logprobs": logprobs.get(i), "finish_reason": finish[i] or "stop"}
        for i in sorted(texts)
    ]
    if usage is not None:
        body["usage"] = usage
    return msgspec.json.encode(body)


def _to_events(body: dict[str, Any], wants_usage: bool) -> bytes:
    """The SSE events of a live stream of a completion already read (its shape checked), `[DONE]` last.

    As OpenAI streams: each choice's text in pieces (by word; with logprobs, whole, as they cannot be split),
    the finish reason on its last piece, then the usage chunk when asked for.
    """
    envelope = {"id": body.get("id"), "object": "text_completion", "created": body.get("created")}
    envelope["model"] = body.get("model")
    if body.get("system_fingerprint") is not None:
        envelope["system_fingerprint"] = body["system_fingerprint"]
    out = []
    for choice in body.get("choices") or ():
        text, logprobs = choice.get("text") or "", choice.get("logprobs")
        pieces = [text] if logprobs or not text else _WORD.findall(text)
        for number, piece in enumerate(pieces, 1):
            last = number == len(pieces)
            part = {
                "text": piece,
                "index": choice.get("index", 0),
                "logprobs": logprobs,
                "finish_reason": (choice.get("finish_reason") or "stop") if last else None,
            }
            out.append(encode_event(msgspec.json.encode({**envelope, "choices": [part]})))
    if wants_usage and body.get("usage") is not None:
        out.append(encode_event(msgspec.json.encode({**envelope, "choices": [], "usage": body["usage"]})))
    out.append(DONE_EVENT)
    return b"".join(out)


_FORMS = framing.StoredForms(TextCompletionView, TextCompletionView, _to_events, _assemble)
_ENCODE = msgspec.json.encode


class CompletionsCodec:
    """Legacy completions (`text_completion` answers and chunks, streams ending in `[DONE]`)."""

    __slots__ = ()

    kind = "completions"
    path = ("completions",)
    ignored_fields = IGNORED_FIELDS
    end_event = DONE_EVENT

    def __repr__(self) -> str:
        return "COMPLETIONS"

    def decode(self, raw: bytes) -> Body[CompletionsRequest]:
        """The body read and checked once (`proxy.wire.inputs.decode_completions_body`)."""
        return decode_completions_body(raw)

    def requested_model(self, body: Body[CompletionsRequest]) -> str:
        """The request's `model`."""
        return body.view.model

    def streams(self, body: Body[CompletionsRequest]) -> bool:
        """`stream: true`."""
        return bool(body.view.stream)

    def question(self, body: Body[CompletionsRequest]) -> str:
        """The prompt, when it is one string."""
        return input_text(body.view.prompt)

    def features(self, call: Call[CompletionsRequest]) -> RequestFeatures:
        """What a policy could read of it: the prompt as the user's text, the sampling, the caller."""
        request = call.request
        return text_features(
            call,
            request.model,
            input_text(request.prompt),
            request.user,
            stream=bool(request.stream),
            n=1 if request.n is None else request.n,
            temperature=request.temperature,
        )

    def upstream_body(self, body: Body[CompletionsRequest], *, model: str | None, stream: bool) -> bytes:
        """`raw` unchanged, except `model` and, for a stream, `stream_options.include_usage` (as for chat)."""
        members: dict[str, msgspec.Raw] = {}
        if model is not None and body.view.model != model:
            members["model"] = msgspec.Raw(_ENCODE(model))
        if stream and not body.view.wants_usage_chunk:
            ask_for_usage(body.fields, members)
        return body.replaced(members).raw if members else body.raw

    def read_answer(self, content: bytes) -> tuple[str | None, Usage | None]:
        """A `text_completion`'s model and usage, its shape checked (`proxy.wire.answers`)."""
        _, view = read_answer(content, TextCompletionView)
        return view.model, view.usage

    def cut(self, events: bytes) -> StreamCut:
        """The events up to `[DONE]`, an unreadable chunk or an error (`proxy.endpoints.framing`)."""
        return framing.cut(events, TextCompletionView)

    def deterministic(self, body: Body[CompletionsRequest]) -> bool:
        """`temperature: 0`, or a `seed` that is not null."""
        return asks_one_answer(body.view.temperature, body.fields)

    def cache_context(self, body: Body[CompletionsRequest]) -> Mapping[str, msgspec.Raw] | None:
        """None: a prompt is answered for itself, never from a similar one's answer."""
        return None

    def wants_usage(self, body: Body[CompletionsRequest]) -> bool:
        """`stream_options.include_usage`."""
        return body.view.wants_usage_chunk

    def stored(self, answer: bytes) -> bytes:
        """`C` + the completion."""
        return framing.entry(framing.COMPLETION, answer)

    def stored_stream(self, events: bytes) -> bytes | None:
        """`S` + the events, when they end with `[DONE]`."""
        return framing.entry(framing.STREAM, events) if events.endswith(DONE_EVENT) else None

    def replay(self, stored: bytes, *, stream: bool, wants_usage: bool) -> Replay:
        """A stored entry in the form asked (`proxy.endpoints.framing.StoredForms.replay`)."""
        return _FORMS.replay(stored, stream=stream, wants_usage=wants_usage)

    def replayable(self, stored: bytes) -> bool:
        """Whether an entry replays in both forms."""
        return _FORMS.replayable(stored)

    def take_usage(self, events: bytes, *, keep: bool) -> UsageFound:
        """The usage chunk's usage; the usage-only chunk dropped unless `keep`."""
        return framing.take_usage(events, TextCompletionView, keep=keep)

    def ends(self, events: bytes) -> bool:
        """Whether `events` end with `data: [DONE]`."""
        return events.endswith(DONE_EVENT)

    def error_event(self, error: ProxyError) -> bytes:
        """`data: {"error": ...}`."""
        return encode_event(error.body())

    def content(self, body: Body[CompletionsRequest], answer: bytes | None) -> Content:
        """Its `prompt` as sent, and each choice's text."""
        return Content(input=body.fields.get("prompt"), answer=answer_texts(answer, TextCompletionView, _choice_texts))

    def upstream_error(self, body: Body[CompletionsRequest], error: ProxyError) -> ProxyError:
        """`error` as it is: a completions request names nothing an upstream holds."""
        return error


def _choice_texts(answer: TextCompletionView) -> list[str | None]:
    return [choice.text for choice in answer.choices or ()]


COMPLETIONS = CompletionsCodec()
"""The legacy completions codec (stateless: one for the process)."""
