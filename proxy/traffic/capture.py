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


def _request(tally: Tally) -> Any:
    if tally.request is not None:
        return _json(tally.request.raw)
    return _json(b"".join(tally.received)) if tally.received else None


def _responses_answer(events: bytes) -> Any:
    """The response the last event that carries one holds (`response.completed`, `.failed`, `.incomplete`)."""
    found = None
    for event in split_events(events):
        data = event_data(event)
        if data and b'"response"' in data:
            decoded = _json(data)
            if isinstance(decoded, dict) and isinstance(decoded.get("response"), dict):
                found = decoded["response"]
    return found


def _assembled(codec: Codec[Any], events: bytes) -> Any:
    """A `[DONE]`-framed stream (chat, completions) as the whole answer; one cut short, from its chunks so far."""
    stored = codec.stored_stream(events)
    if stored is None:  # broken off: its readable chunks, then an end
        chunks = []
        for event in split_events(events):
            data = event_data(event)
            if data and data != DONE:
                decoded = _json(data)
                if isinstance(decoded, dict) and "error" not in decoded:
                    chunks.append(b"data: " + data + b"\n\n")
        stored = codec.stored_stream(b"".join(chunks) + DONE_EVENT)
    if stored is None:
        return None
    try:
        return _json(codec.replay(stored, stream=False, wants_usage=True).body)
    except UnreadableAnswerError:
        return None


def _answer(tally: Tally) -> Any:
    """The answer as the client got it: the body, or the stream assembled into one (None: none, or unreadable)."""
    if tally.answer is not None:
        return _json(tally.answer)
    if not tally.sent:
        return None
    body = b"".join(tally.sent)
    codec = _CODECS.get(tally.endpoint) if tally.routed else None
    if not (tally.stream and codec is not None and tally.status < 400):
        return _json(body)
    if codec is RESPONSES:
        return _responses_answer(body)
    return _assembled(codec, body)


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


def exchange_of(pending: Pending, redaction: Redaction) -> Exchange:
    """The exchange `pending` describes, its content (when kept) redacted."""
    tally = pending.tally
    answer = _answer(tally)
    error = _error(tally, answer)
    content = pending.content
    request = redaction.value(_request(tally)) if content else None
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
        usage=_usage(tally, answer),
        cost=tally.cost,
        baseline=tally.baseline,
        savings=tally.savings,
        latency_ms=round((ended - tally.started) * 1000, 3),
        ttfb_ms=None if tally.first_byte_at is None else round((tally.first_byte_at - tally.started) * 1000, 3),
        request=request if isinstance(request, dict) else None,
        answer=redaction.value(answer) if content and isinstance(answer, dict) else None,
    )
