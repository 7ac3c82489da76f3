"""`EMBEDDINGS`, the codec of `POST /v1/embeddings`: never streamed, always deterministic, relayed unchanged.

An embeddings request is checked as OpenAI checks it (`input`: a string, strings, a token array or token
arrays; `dimensions` an integer from 1; `encoding_format` `float` or `base64`) and forwarded as it came,
with only `model` rewritten when its route names one. The answer (`object: list` of `embedding`s, floats or
base64 strings as asked) goes back byte for byte, and its usage (`prompt_tokens`, `total_tokens`) prices it.

The same input, model, dimensions and encoding always embed the same: every request is cacheable, keyed
by all of them (every field but `user`). It has no stream: the stream half of the codec is there for the
protocol, and says so (no stored stream, no replay as one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from policies import RequestFeatures
from proxy.endpoints.base import Replay, UsageFound
from proxy.endpoints.framing import COMPLETION, entry
from proxy.wire.answers import UnreadableAnswerError, read_answer
from proxy.wire.content import Content
from proxy.wire.endpoint import Body, StreamCut
from proxy.wire.errors import ProxyError
from proxy.wire.inputs import EmbeddingsRequest, decode_embeddings_body, input_text
from proxy.wire.schemas import ChatMessage, Usage
from routes import Call

__all__ = ["ANSWER_FIELDS", "EMBEDDINGS", "IGNORED_FIELDS", "EmbeddingsCodec", "EmbeddingsView", "text_features"]

ANSWER_FIELDS = frozenset({"dimensions", "encoding_format", "input", "model"})
"""Request fields that change the answer: each one's value is part of the key."""
IGNORED_FIELDS = frozenset({"user"})
"""Request fields that do not change the answer (`user`: abuse monitoring). A field in neither set is keyed."""

_ENCODE = msgspec.json.encode


class _Datum(msgspec.Struct, frozen=True):
    index: int = 0
    embedding: list[float] | str | None = None


class EmbeddingsView(msgspec.Struct, frozen=True):
    """An embeddings answer as far as Turnout reads it: the model, the vectors' shape, the usage."""

    data: list[_Datum]
    model: str | None = None
    usage: Usage | None = None


def text_features(call: Call[Any], model: str, text: str, user: str | None, **sampling: Any) -> RequestFeatures:
    """The policy features of a request whose question is one text (an input, a prompt): as a user's message."""
    return RequestFeatures(
        model=model,
        messages=(ChatMessage(role="user", content=text),) if text else (),
        headers={name.lower(): value for name, value in call.headers.items()},
        user=user,
        caller=call.caller,
        team=call.team,
        **sampling,
    )


class EmbeddingsCodec:
    """Embeddings (`list` answers of `embedding` objects; never streamed)."""

    __slots__ = ()

    kind = "embeddings"
    path = ("embeddings",)
    ignored_fields = IGNORED_FIELDS
    end_event = b""
    """None: an embeddings answer is never streamed."""

    def __repr__(self) -> str:
        return "EMBEDDINGS"

    def decode(self, raw: bytes) -> Body[EmbeddingsRequest]:
        """The body read and checked once (`proxy.wire.inputs.decode_embeddings_body`)."""
        return decode_embeddings_body(raw)

    def requested_model(self, body: Body[EmbeddingsRequest]) -> str:
        """The request's `model`."""
        return body.view.model

    def streams(self, body: Body[EmbeddingsRequest]) -> bool:
        """Never: embeddings are one answer."""
        return False

    def question(self, body: Body[EmbeddingsRequest]) -> str:
        """The input, when it is one string."""
        return input_text(body.view.input)

    def features(self, call: Call[EmbeddingsRequest]) -> RequestFeatures:
        """What a policy could read of it: the model, the caller, the headers, the input as the user's text."""
        request = call.request
        return text_features(call, request.model, input_text(request.input), request.user)

    def upstream_body(self, body: Body[EmbeddingsRequest], *, model: str | None, stream: bool) -> bytes:
        """`raw` unchanged, but for `model` when the route names another."""
        if model is None or body.view.model == model:
            return body.raw
        return body.replaced({"model": msgspec.Raw(_ENCODE(model))}).raw

    def read_answer(self, content: bytes) -> tuple[str | None, Usage | None]:
        """The answer's model and usage, its shape checked (`proxy.wire.answers`)."""
        _, view = read_answer(content, EmbeddingsView)
        return view.model, view.usage

    def deterministic(self, body: Body[EmbeddingsRequest]) -> bool:
        """Always: the same input embeds the same."""
        return True

    def cache_context(self, body: Body[EmbeddingsRequest]) -> Mapping[str, msgspec.Raw] | None:
        """None: an embedding answers its own input only, never a similar one's."""
        return None

    def wants_usage(self, body: Body[EmbeddingsRequest]) -> bool:
        """Never asked: there is no stream to keep a usage event in."""
        return False

    def stored(self, answer: bytes) -> bytes:
        """`C` + the answer."""
        return entry(COMPLETION, answer)

    def stored_stream(self, events: bytes) -> bytes | None:
        """None: there are no streams to store."""
        return None

    def replay(self, stored: bytes, *, stream: bool, wants_usage: bool) -> Replay:
        """The stored answer, read whole first.

        Raises:
            UnreadableAnswerError: the entry is not a stored answer that reads (or a stream is asked for).
        """
        kind, body = stored[:1], stored[1:]
        if kind != COMPLETION or stream:
            raise UnreadableAnswerError("it is not an entry this version stores")
        model, usage = self.read_answer(body)
        return Replay(body=body, model=model, usage=usage)

    def replayable(self, stored: bytes) -> bool:
        """Whether `stored` reads as an answer."""
        try:
            self.replay(stored, stream=False, wants_usage=False)
        except UnreadableAnswerError:
            return False
        return True

    def cut(self, events: bytes) -> StreamCut:
        """`events` as they are: an embeddings answer has no stream to end."""
        return StreamCut(events)

    def take_usage(self, events: bytes, *, keep: bool) -> UsageFound:
        """Nothing to take: an embeddings answer has no stream."""
        return UsageFound(events)

    def ends(self, events: bytes) -> bool:
        """Never: there is no stream to end."""
        return False

    def error_event(self, error: ProxyError) -> bytes:
        """The error's JSON body (an embeddings error is always a whole response)."""
        return error.body()

    def content(self, body: Body[EmbeddingsRequest], answer: bytes | None) -> Content:
        """Its `input` as sent; no answer content (vectors are no text)."""
        return Content(input=body.fields.get("input"))

    def upstream_error(self, body: Body[EmbeddingsRequest], error: ProxyError) -> ProxyError:
        """`error` as it is: a embeddings request names nothing an upstream holds."""
        return error


EMBEDDINGS = EmbeddingsCodec()
"""The embeddings codec (stateless: one for the process)."""
