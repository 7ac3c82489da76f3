"""The `data: [DONE]` streams chat and legacy completions share: where one ends or breaks, its usage, its stored forms.

Both endpoints stream one JSON chunk per `data:` event, report their usage in a last chunk without
choices (when `stream_options.include_usage` asks for it) and end with `data: [DONE]`; an error after
the first event is a `data: {"error": ...}` event. Their answers are cached in the form they were
produced in: `C` + the whole answer, or `S` + the stream's events as the route sent them. What differs
between the two is the shape of a chunk and of an answer (a `ChunkShape`), and how a stream adds up to
an answer and an answer plays as a stream (a `StoredForms`'s two functions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from proxy.endpoints.base import Replay, UsageFound
from proxy.endpoints.cited import first_sources, headers_of
from proxy.wire.answers import UnreadableAnswerError, read_answer
from proxy.wire.endpoint import StreamCut
from proxy.wire.errors import UpstreamError, upstream_stream_error
from proxy.wire.schemas import Usage
from proxy.wire.sse import DONE, DONE_EVENT, event_data, split_events

__all__ = ["COMPLETION", "STREAM", "ChunkShape", "StoredForms", "cut", "entry", "joined", "keep_envelope", "take_usage"]

COMPLETION = b"C"
"""The kind of a stored whole answer."""
STREAM = b"S"
"""The kind of a stored stream."""
# A usage object, not the `"usage": null` every chunk carries once usage is on; escaped text cannot match.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


class ChunkShape(Protocol):
    """What Turnout reads of a chunk (or of a whole answer): the model, the choices, the usage."""

    @property
    def model(self) -> str | None:
        """The model that answered."""
        ...

    @property
    def choices(self) -> Sequence[object] | None:
        """The choices (none in a usage-only chunk)."""
        ...

    @property
    def usage(self) -> Usage | None:
        """The usage, where it is reported."""
        ...


ChunkT = TypeVar("ChunkT", bound=ChunkShape)
AnswerT = TypeVar("AnswerT", bound=ChunkShape)


def entry(kind: bytes, body: bytes) -> bytes:
    """The stored form of an answer: its kind, then its bytes."""
    return kind + body


def keep_envelope(body: dict[str, Any], chunk: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Put in `body` each of `fields` (`id`, `created`, `model`, ...) `chunk` has, unless `body` has it already.

    How an answer assembled from its stream's chunks gets the fields they all share (the first one given).
    """
    for field in fields:
        if chunk.get(field) is not None:
            body.setdefault(field, chunk[field])


def joined(events: Sequence[bytes]) -> bytes:
    """Events (as `split_events` gives them) framed again, each ending in a blank line."""
    return b"".join(event + b"\n\n" for event in events)


def cut(events: bytes, chunk: type[ChunkShape]) -> StreamCut:
    """The events up to `[DONE]` (normalised; anything after it dropped), an unreadable chunk or an error."""
    if events.startswith(b"data: {") and events.count(b"\n") == 2:  # one one-line chunk: nearly every read
        payload = events[6:-2]
        try:
            read_answer(payload, chunk)
        except UnreadableAnswerError as exc:
            return StreamCut(b"", unreadable=str(exc))
        return StreamCut(events) if upstream_stream_error(payload) is None else StreamCut(b"", error=payload)
    parts = split_events(events)
    for index, event in enumerate(parts):
        data = event_data(event)
        if not data:  # comments and `event:` lines carry no chunk
            continue
        if data == DONE:
            return StreamCut(joined(parts[:index]) + DONE_EVENT, ended=True)
        try:
            read_answer(data, chunk)
        except UnreadableAnswerError as exc:
            return StreamCut(joined(parts[:index]), unreadable=str(exc))
        if upstream_stream_error(data) is not None:
            return StreamCut(joined(parts[:index]), error=data)
    return StreamCut(events)


def take_usage(events: bytes, chunk: type[ChunkShape], *, keep: bool) -> UsageFound:
    """The usage chunk's usage; the usage-only chunk dropped unless `keep`.

    A usage chunk that cannot be read (a count out of range, say) is the upstream's fault, as an
    unreadable answer is: the stream ends with an `upstream_error` (routes check every chunk first;
    this holds for any source).
    """
    if not _USAGE_OBJECT.search(events):  # once a stream: every other run passes untouched
        return UsageFound(events)
    kept, usage, model = [], None, None
    for event in split_events(events):
        data = event_data(event)
        if data is not None and _USAGE_OBJECT.search(data):
            try:
                _, found = read_answer(data, chunk)
            except UnreadableAnswerError as exc:
                raise UpstreamError(f"The upstream sent a usage chunk that Turnout cannot read: {exc}.") from None
            if found.usage is not None:
                usage, model = found.usage, found.model
                if not found.choices and not keep:
                    continue
        kept.append(event + b"\n\n")
    return UsageFound(b"".join(kept), usage, model)


@dataclass(frozen=True, slots=True)
class StoredForms(Generic[AnswerT, ChunkT]):
    """Cached answers of one `[DONE]`-framed endpoint, replayed in either form.

    A stored stream replays as it came (its usage chunk dropped unless asked for) or assembles into an
    answer; a stored answer replays as is, or as the chunks a live stream of it would have had. Every
    entry is read whole as an upstream's answer is before any of it is replayed: an entry stored by
    another version, or changed in a shared Redis, is never trusted.
    """

    answer: type[AnswerT]
    """The view a whole answer is read with."""
    chunk: type[ChunkT]
    """The view a stream chunk is read with."""
    to_events: Callable[[dict[str, Any], bool], bytes]
    """An answer (read, as plain values) as a live stream's events, `[DONE]` last; the usage chunk when asked."""
    assemble: Callable[[list[dict[str, Any]]], bytes]
    """The whole answer a finished stream's chunks (read, as plain values) add up to."""

    def _read_stream(self, events: bytes, *, wants_usage: bool) -> tuple[bytes, list[dict[str, Any]], ChunkT | None]:
        """Every chunk read once: the events to replay, the chunks as plain values, the last usage chunk.

        The events to replay leave the usage-only chunk out unless `wants_usage`.
        """
        kept, chunks, usage_chunk = [], [], None
        for event in split_events(events):
            data = event_data(event)
            if data and data != DONE:
                plain, view = read_answer(data, self.chunk)
                chunks.append(plain)
                if view.usage is not None:
                    usage_chunk = view
                    if not view.choices and not wants_usage:
                        continue
            kept.append(event + b"\n\n")
        return (events if wants_usage else b"".join(kept)), chunks, usage_chunk

    def replay(self, stored: bytes, *, stream: bool, wants_usage: bool) -> Replay:
        """A stored entry as the answer to a new request: a stream (with the usage chunk, if `wants_usage`) or not.

        Raises:
            UnreadableAnswerError: the entry is not one this version could replay (an unknown kind, an answer
                that does not read).
        """
        kind, body = stored[:1], stored[1:]
        if kind == COMPLETION:
            plain, view = read_answer(body, self.answer)
            replayed = self.to_events(plain, wants_usage) if stream else body
            return Replay(body=replayed, model=view.model, usage=view.usage, headers=headers_of(first_sources([plain])))
        if kind != STREAM:
            raise UnreadableAnswerError("it is not an entry this version stores")
        events, chunks, found = self._read_stream(body, wants_usage=wants_usage)
        model, usage = (found.model, found.usage) if found is not None else (None, None)
        headers = headers_of(first_sources(chunks))
        return Replay(body=events if stream else self.assemble(chunks), model=model, usage=usage, headers=headers)

    def replayable(self, stored: bytes) -> bool:
        """Whether `stored` replays in both forms (checked before it is stored).

        Turning an answer into a stream reads all of it, as assembling a stream reads all of its chunks;
        the form an entry was stored in is that same whole, read.
        """
        try:
            self.replay(stored, stream=not stored.startswith(STREAM), wants_usage=False)
        except UnreadableAnswerError:
            return False
        return True
