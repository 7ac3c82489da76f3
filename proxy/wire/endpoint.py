"""`Body`, a request body decoded once, and `Endpoint`, what a route needs to know of an endpoint kind.

A route is endpoint-agnostic: it forwards `call.body` to the path its call's `Endpoint` names and asks the
same `Endpoint` how to rewrite the body for its upstream, whether an answer reads, and where a stream
ends or breaks. Each endpoint kind's codec (`proxy.endpoints`) implements this protocol and the rest of
what the pipeline needs; this module holds only what routes may see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
    from proxy.wire.schemas import Usage

__all__ = ["Body", "Endpoint", "StreamCut", "ViewT"]

ViewT = TypeVar("ViewT")
_ENCODE = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class Body(Generic[ViewT]):
    """A request body, decoded once: its bytes, its typed view, and its top-level members as sent."""

    raw: bytes
    """The body exactly as the client sent it."""
    view: ViewT
    """The typed view the endpoint's codec reads (for decisions)."""
    fields: Mapping[str, msgspec.Raw]
    """Each top-level member's value as the raw JSON it was sent as (for cache keys and rewrites)."""

    def replaced(self, members: Mapping[str, msgspec.Raw]) -> Body[ViewT]:
        """This body with `members` (raw JSON values) put in place of, or after, its own; the typed view kept.

        Only those members are new: every other one is copied as it came, nothing nested is parsed again.
        """
        fields = {**self.fields, **members}
        return Body(raw=_ENCODE(fields), view=self.view, fields=fields)


class StreamCut(NamedTuple):
    """A run of upstream events read up to where the stream ends or breaks (a tuple: one is made per read)."""

    events: bytes
    """The events to pass on: all of them, or those before the end or the fault."""
    ended: bool = False
    """The stream's end was found (its last event is the endpoint's end, normalised)."""
    unreadable: str | None = None
    """Why an event could not be read as this endpoint's chunk (the stream breaks there)."""
    error: bytes | None = None
    """The data of an error event the upstream sent (the stream breaks there)."""


class Endpoint(Protocol[ViewT]):
    """An endpoint kind as a route sees it: where its requests go, and how its answers read."""

    @property
    def kind(self) -> str:
        """Its name (`chat`), as routes declare the endpoints they serve."""
        ...

    @property
    def path(self) -> tuple[str, ...]:
        """The upstream path under the base URL, by segment (`("chat", "completions")`)."""
        ...

    def upstream_body(self, body: Body[ViewT], *, model: str | None, stream: bool) -> bytes:
        """The body to send upstream: the client's, with `model` (None: the caller's own).

        For a stream, also whatever makes the upstream report its usage.
        """
        ...

    def read_answer(self, content: bytes) -> tuple[str | None, Usage | None]:
        """The model that answered and the usage of a whole (non-streamed) answer.

        Raises:
            UnreadableAnswerError: `content` is not an answer of this endpoint that Turnout can read.
        """
        ...

    def question(self, body: Body[ViewT]) -> str:
        """The text a request asks, as its meaning is embedded: its last user message ("" when none)."""
        ...

    def cut(self, events: bytes) -> StreamCut:
        """`events` (whole SSE events) up to the stream's end or its first unreadable or error event."""
        ...
