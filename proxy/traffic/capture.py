"""`exchange_of(pending, redaction)`: a finished request's `Tally` read into an `Exchange`, in the writer.

The request path hands the traffic log the tally it has (`Pending`: a reference, a time, a flag); everything
here runs later, in the writer's thread: decoding the bodies, assembling a stream into the answer it adds up to
(the codec's own replay for chat and completions, tool calls included; a Responses stream's last event that
carries the response, `response.completed` when it finished), and redacting what content is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from proxy.accounting.tally import Tally
from proxy.endpoints.base import Codec
from proxy.endpoints.chat import CHAT
from proxy.endpoints.completions import COMPLETIONS
from proxy.endpoints.embeddings import EMBEDDINGS
from proxy.endpoints.responses import RESPONSES
from proxy.traffic.record import Exchange
from proxy.traffic.redact import Redaction
from proxy.wire.answers import UnreadableAnswerError
from proxy.wire.sse import DONE, DONE_EVENT, event_data, split_events

__all__ = ["ENDPOINTS", "Pending", "endpoint_of", "exchange_of"]

ENDPOINTS = {"chat": "chat.completions", "responses": "responses", "completions": "completions"}
"""An exchange's `endpoint` by the codec's kind (`embeddings` is its own); a pass-through's is its path."""
_CODECS: dict[str, Codec[Any]] = {codec.kind: codec for codec in (CHAT, RESPONSES, COMPLETIONS, EMBEDDINGS)}
_PATHS = {
    f"{prefix}/{path}": ENDPOINTS.get(kind, kind)
    for prefix in ("", "/v1")
    for kind, path in (
        ("chat", "chat/completions"),
        ("responses", "responses"),
        ("completions", "completions"),
        ("embeddings", "embeddings"),
    )
}
_DECODER = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Pending:
    """A finished request waiting for the writer: its tally, path, arrival (unix seconds), whether content is kept."""

    tally: Tally
    path: str
    at: float
    content: bool


def endpoint_of(tally: Tally, path: str) -> str:
    """`chat.completions`, `responses`, `completions`, `embeddings`; else the request's path (a pass-through's)."""
    if tally.routed and tally.endpoint in _CODECS:
        return ENDPOINTS.get(tally.endpoint, tally.endpoint)
    return _PATHS.get(path, path)


def _json(raw: bytes | None) -> Any:
    if not raw or raw[:1] not in (b"{", b"["):
        return None
    try:
        return _DECODER.decode(raw)
    except msgspec.DecodeError:
        return None


class _Head(msgspec.Struct):
    """The members of an answer (or of a stream event) read without content: its usage, its error."""

    usage: msgspec.Raw = msgspec.Raw()
    error: msgspec.Raw = msgspec.Raw()
    response: msgspec.Raw = msgspec.Raw()


_HEAD = msgspec.json.Decoder(_Head)


def _head(raw: bytes | None) -> _Head | None:
    if not raw or raw[:1] != b"{":
        return None
    try:
        return _HEAD.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _request_raw(tally: Tally) -> bytes | None:
    if tally.request is not None:
        return tally.request.raw
    return b"".join(tally.received) if tally.received else None


def _datas(events: bytes) -> list[bytes]:
    return [data for data in map(event_data, split_events(events)) if data and data != DONE]


def _responses_answer(events: bytes) -> bytes | None:
    """The response the last event that carries one holds (`response.completed`, `.failed`, `.incomplete`)."""
    for data in reversed(_datas(events)):
        if b'"response"' in data:
            head = _head(data)
            if head is not None and bytes(head.response)[:1] == b"{":
                return bytes(head.response)
    return None


def _assembled(codec: Codec[Any], events: bytes) -> bytes | None:
    """A `[DONE]`-framed stream (chat, completions) as the whole answer; one cut short, from its chunks so far."""
    stored = codec.stored_stream(events)
    if stored is None:  # broken off: its readable chunks, then an end
        chunks = []
        for data in _datas(events):
            head = _head(data)
            if head is not None and not head.error:
                chunks.append(b"data: " + data + b"\n\n")
        stored = codec.stored_stream(b"".join(chunks) + DONE_EVENT)
    if stored is None:
        return None
    try:
        return codec.replay(stored, stream=False, wants_usage=True).body
    except UnreadableAnswerError:
        return None


def _streamed(tally: Tally) -> tuple[Codec[Any] | None, bytes]:
    """The codec of a routed stream that began (None: not one) and what was sent of it."""
    codec = _CODECS.get(tally.endpoint) if tally.routed and tally.stream and tally.status < 400 else None
    return codec, b"".join(tally.sent or ())


def _answer(tally: Tally) -> bytes | None:
    """The answer as the client got it: the body, or the stream assembled into one."""
    if tally.answer is not None:
        return tally.answer
    codec, sent = _streamed(tally)
    if codec is None or not sent:
        return sent or None
    return _responses_answer(sent) if codec is RESPONSES else _assembled(codec, sent)


def _stream_usage(tally: Tally) -> dict[str, Any] | None:
    """A stream's usage as its last event with one reported it (a Responses event: its response's), unassembled."""
    codec, sent = _streamed(tally)
    for data in reversed(_datas(sent) if codec is not None else ()):
        if b'"usage"' in data:
            head = _head(data)
            if head is not None and codec is RESPONSES:
                head = _head(bytes(head.response))
            usage = _json(bytes(head.usage)) if head is not None else None
            if isinstance(usage, dict):
                return usage
    return None


def _error(tally: Tally, answer: Any) -> str | None:
    failure = tally.failure
    if failure is not None:
        return f"{failure.type}: {failure.message}"
    if tally.status < 400:
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return f"{error.get('type') or 'error'}: {error['message']}"
    return f"status {tally.status}"


def _usage(tally: Tally, answer: Any) -> dict[str, Any] | None:
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if isinstance(usage, dict):
        return usage
    return None if tally.usage is None else msgspec.to_builtins(tally.usage)


def _read(tally: Tally, content: bool, redaction: Redaction) -> tuple[Any, Any, dict[str, Any] | None]:
    """The request and the answer (decoded and redacted when content is kept, else None), and the usage."""
    if content:
        answer = redaction.document(_answer(tally) or b"")
        return redaction.document(_request_raw(tally) or b""), answer, _usage(tally, answer)
    if tally.status >= 400:  # an error's body, for its message (small)
        return None, _json(b"".join(tally.sent or ()) or tally.answer), None
    if tally.answer is not None:
        head = _head(tally.answer)
        usage = _json(bytes(head.usage)) if head is not None else None
    else:
        usage = _stream_usage(tally)
    return None, None, usage if isinstance(usage, dict) else _usage(tally, None)


def exchange_of(pending: Pending, redaction: Redaction) -> Exchange:
    """The exchange `pending` describes, its content (when kept) redacted."""
    tally = pending.tally
    request, answer, usage = _read(tally, pending.content, redaction)
    error = _error(tally, answer)
    if not pending.content:
        answer = None
    ended = tally.ended_at if tally.ended_at is not None else tally.started
    return Exchange(
        request_id=tally.request_id,
        at=pending.at,
        endpoint=endpoint_of(tally, pending.path),
        stream=tally.stream,
        caller=tally.caller,
        team=tally.team,
        route=tally.route,
        rule=tally.rule,
        reason=tally.reason,
        model=tally.model,
        fallbacks=tally.fallback_from,
        status=tally.status,
        error=None if error is None else redaction.text(error),
        cache=tally.cache if tally.cache != "bypass" else None,
        usage=usage,
        cost=tally.cost,
        baseline=tally.baseline,
        savings=tally.savings,
        latency_ms=round((ended - tally.started) * 1000, 3),
        ttfb_ms=None if tally.first_byte_at is None else round((tally.first_byte_at - tally.started) * 1000, 3),
        request=request if isinstance(request, dict) else None,
        answer=answer if isinstance(answer, dict) else None,
    )
