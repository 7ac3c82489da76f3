"""Cached Responses in either form: a stored stream read back as its `Response`, a `Response` replayed as events.

An entry is stored in the form it was produced in: `R` + the `Response` body, or `E` + the stream's typed
SSE events as the route sent them (`response.completed` last). A hit is turned into the form the new
request asks for: a stream replays as it came; a whole response replays as the events a live stream of
it would have had (`response.created`, `response.in_progress`, each output item added, its text by word,
done, then `response.completed`, numbered by `sequence_number` from 0); a stream reads back as the
`Response` its `response.completed` event carries.

Only a finished answer is stored: a `Response` whose status is `completed` (not a `queued` background
one), a stream that ends with `response.completed`. Every entry is read whole as an upstream's answer
is before any of it is replayed; one that does not read raises `UnreadableAnswerError`, which the cache
answers as a miss.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import msgspec

from proxy.endpoints.base import Replay
from proxy.endpoints.cited import SOURCES_FIELD, headers_of
from proxy.wire.answers import UnreadableAnswerError, read_answer
from proxy.wire.schemas import CompletionTokensDetails, PromptTokensDetails, TokenCount, Usage
from proxy.wire.sse import event_data, split_events

__all__ = [
    "RESPONSE",
    "STREAM",
    "EventView",
    "ResponseView",
    "ResponsesUsage",
    "encode_typed",
    "entry",
    "output_texts",
    "replay",
    "replayable",
    "usage_of",
    "usage_of_counts",
]

RESPONSE = b"R"
STREAM = b"E"
_WORD = re.compile(r"\S+\s*|\s+")


class _InputDetails(msgspec.Struct, frozen=True):
    cached_tokens: TokenCount = 0
    audio_tokens: TokenCount = 0


class _OutputDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: TokenCount = 0
    audio_tokens: TokenCount = 0


class ResponsesUsage(msgspec.Struct, frozen=True):
    """The Responses API's usage (`input_tokens`, `output_tokens` and their details), as far as Turnout prices it."""

    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    total_tokens: TokenCount = 0
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Item(msgspec.Struct, frozen=True):
    type: str
    content: list[dict[str, Any]] | None = None


class ResponseView(msgspec.Struct, frozen=True):
    """A `Response` object as far as Turnout reads it (an unreadable one is the upstream's fault)."""

    id: str
    output: list[_Item]
    model: str | None = None
    status: str | None = None
    usage: ResponsesUsage | None = None


class EventView(msgspec.Struct, frozen=True):
    """One typed stream event; `response` on the life-cycle events (`response.created`, `.completed`, ...)."""

    type: str
    sequence_number: int | None = None
    response: ResponseView | None = None


def usage_of(response: ResponseView | None) -> Usage | None:
    """A Response's usage in `proxy.wire.schemas.Usage`'s terms (input → prompt, output → completion)."""
    if response is None or response.usage is None:
        return None
    return usage_of_counts(response.usage)


def usage_of_counts(used: ResponsesUsage) -> Usage:
    """Counts in the Responses API's terms (a Response's, a batch's) as a `Usage`."""
    total = used.total_tokens or used.input_tokens + used.output_tokens
    given, made = used.input_tokens_details, used.output_tokens_details
    return Usage(
        prompt_tokens=used.input_tokens,
        completion_tokens=used.output_tokens,
        total_tokens=total,
        prompt_tokens_details=None
        if given is None
        else PromptTokensDetails(cached_tokens=given.cached_tokens, audio_tokens=given.audio_tokens),
        completion_tokens_details=None
        if made is None
        else CompletionTokensDetails(reasoning_tokens=made.reasoning_tokens, audio_tokens=made.audio_tokens),
    )


def output_texts(response: ResponseView) -> list[str | None]:
    """The text of each `message` output item (its `output_text` parts joined; a refusal's text otherwise)."""
    return [
        "".join(str(part.get("text", part.get("refusal", ""))) for part in item.content or ())
        for item in response.output
        if item.type == "message"
    ]


def entry(kind: bytes, body: bytes) -> bytes:
    """The stored form of an answer: its kind, then its bytes."""
    return kind + body


def encode_typed(event: dict[str, Any]) -> bytes:
    """One typed event as OpenAI frames it: `event: <type>` then its `data:` line."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(event) + b"\n\n"


def _started(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as `response.output_item.added` shows it: in progress, empty."""
    if item.get("type") == "message":
        return {**item, "status": "in_progress", "content": []}
    if item.get("type") == "function_call":
        return {**item, "status": "in_progress", "arguments": ""}
    return item


def _part_events(ids: dict[str, Any], part: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = part.get("type")
    field = {"output_text": "text", "refusal": "refusal"}.get(str(kind))
    if field is None:
        yield {"type": "response.content_part.added", **ids, "part": part}
        yield {"type": "response.content_part.done", **ids, "part": part}
        return
    text = str(part.get(field) or "")
    yield {"type": "response.content_part.added", **ids, "part": {**part, field: ""}}
    if field == "text":
        for word in _WORD.findall(text):
            yield {"type": "response.output_text.delta", **ids, "delta": word, "logprobs": []}
        yield {"type": "response.output_text.done", **ids, "text": text, "logprobs": part.get("logprobs") or []}
    else:
        yield {"type": "response.refusal.delta", **ids, "delta": text}
        yield {"type": "response.refusal.done", **ids, "refusal": text}
    yield {"type": "response.content_part.done", **ids, "part": part}


def _item_events(index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield {"type": "response.output_item.added", "output_index": index, "item": _started(item)}
    ids = {"item_id": item.get("id"), "output_index": index}
    if item.get("type") == "message":
        for content_index, part in enumerate(item.get("content") or ()):
            yield from _part_events({**ids, "content_index": content_index}, part)
    elif item.get("type") == "function_call":
        arguments = str(item.get("arguments") or "")
        yield {"type": "response.function_call_arguments.delta", **ids, "delta": arguments}
        done = {"type": "response.function_call_arguments.done", **ids, "name": item.get("name")}
        yield {**done, "arguments": arguments}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def to_events(response: dict[str, Any]) -> bytes:
    """The typed events of a live stream of `response` (read, its shape checked), `response.completed` last."""
    # A RAG answer's sources go with the `response.created` event, as a live stream's do (`routes.rag`).
    finished = {key: value for key, value in response.items() if key != SOURCES_FIELD}
    opened = {key: value for key, value in finished.items() if key != "usage"}
    opened.update(status="in_progress", output=[], completed_at=None)
    cited = {SOURCES_FIELD: response[SOURCES_FIELD]} if response.get(SOURCES_FIELD) is not None else {}
    typed: list[dict[str, Any]] = [
        {"type": "response.created", "response": opened, **cited},
        {"type": "response.in_progress", "response": opened},
    ]
    for index, item in enumerate(response.get("output") or ()):
        typed.extend(_item_events(index, item))
    typed.append({"type": "response.completed", "response": finished})
    numbers = itertools.count()
    return b"".join(encode_typed({**event, "sequence_number": next(numbers)}) for event in typed)


def _completed(events: bytes) -> tuple[dict[str, Any], ResponseView]:
    """The `Response` a stored stream's last event (`response.completed`) carries, every event read first.

    A RAG answer's sources, which its stream gave with its `response.created` event, are added to it.
    """
    last: tuple[dict[str, Any], EventView] | None = None
    sources = None
    for event in split_events(events):
        data = event_data(event)
        if data:
            last = read_answer(data, EventView)
            if sources is None and last[1].type == "response.created":
                sources = last[0].get(SOURCES_FIELD)
    if last is None or last[1].type != "response.completed" or last[1].response is None:
        raise UnreadableAnswerError("its events do not end with response.completed")
    plain: dict[str, Any] = last[0]["response"]
    if sources is not None and SOURCES_FIELD not in plain:
        plain = {**plain, SOURCES_FIELD: sources}
    return plain, last[1].response


def _finished(view: ResponseView) -> ResponseView:
    if view.status not in (None, "completed"):
        raise UnreadableAnswerError(f"it is a response {view.status}, not a finished one")
    return view


def replay(stored: bytes, *, stream: bool) -> Replay:
    """A stored entry as the answer to a new request, as a stream or not.

    Raises:
        UnreadableAnswerError: the entry is not one this version could replay (an unknown kind, an answer
            that does not read, one that is not finished).
    """
    kind, body = stored[:1], stored[1:]
    if kind == RESPONSE:
        plain, view = read_answer(body, ResponseView)
        _finished(view)
        replayed = to_events(plain) if stream else body
        headers = headers_of(plain.get(SOURCES_FIELD))
        return Replay(body=replayed, model=view.model, usage=usage_of(view), headers=headers)
    if kind != STREAM:
        raise UnreadableAnswerError("it is not an entry this version stores")
    plain, view = _completed(body)
    _finished(view)
    replayed = body if stream else msgspec.json.encode(plain)
    return Replay(body=replayed, model=view.model, usage=usage_of(view), headers=headers_of(plain.get(SOURCES_FIELD)))


def replayable(stored: bytes) -> bool:
    """Whether `stored` replays in both forms (checked before it is stored)."""
    try:
        replay(stored, stream=not stored.startswith(STREAM))
    except UnreadableAnswerError:
        return False
    return True
