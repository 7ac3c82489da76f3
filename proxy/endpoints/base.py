"""`Codec`: everything the pipeline, the cache and the relay need to know of one endpoint kind.

The pipeline is endpoint-agnostic: decide → cache → dispatch → account works on a `Call` of any kind,
and asks the call's codec whatever differs between kinds: the request's policy features and its
question, what of it the cache keys and whether it is deterministic, where a stream's usage is and
where it ends, how an error ends a stream, and how a stored answer replays in either form. A codec is
also the `Endpoint` its calls carry to the routes (`proxy.wire.endpoint`). A new endpoint kind is a
codec module and a handler line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import msgspec

from policies import RequestFeatures
from proxy.wire.content import ContentReader
from proxy.wire.endpoint import Body, Endpoint, ViewT
from proxy.wire.errors import ProxyError
from proxy.wire.schemas import Usage
from routes import Call

__all__ = ["Codec", "Replay", "UsageFound"]


@dataclass(frozen=True, slots=True)
class Replay:
    """A stored answer in the form a new request asks for, with what prices it."""

    body: bytes
    """The whole answer, or the stream's events (its end event last)."""
    model: str | None
    """The model that answered, as the answer (or its stream's usage event) names it."""
    usage: Usage | None
    """Its usage, when it reported one."""
    headers: tuple[tuple[str, str], ...] = ()
    """What the route added to the response when it answered, as far as the stored answer tells it
    (a RAG answer's `x-turnout-sources`, from the `turnout_sources` it carries: `proxy.endpoints.cited`)."""


class UsageFound(NamedTuple):
    """A run of stream events with the usage taken out of them, and that usage (None: there was none).

    A tuple: the relay gets one for every run of events it passes on.
    """

    events: bytes
    """The events to send on (a usage-only event dropped unless the caller asked for it)."""
    usage: Usage | None = None
    model: str | None = None
    """The model the usage event names."""


class Codec(Endpoint[ViewT], ContentReader[ViewT], Protocol[ViewT]):
    """One endpoint kind, for the pipeline (its `Endpoint` half is what routes see; its `content`, the access log)."""

    def decode(self, raw: bytes) -> Body[ViewT]:
        """The request body, read and checked once.

        Raises:
            InvalidRequestError: it is not a request of this endpoint that Turnout accepts (a 400 naming why).
        """
        ...

    def requested_model(self, body: Body[ViewT]) -> str:
        """The `model` the caller asked for (a route's name selects that route)."""
        ...

    def streams(self, body: Body[ViewT]) -> bool:
        """Whether the caller asked for a stream."""
        ...

    def features(self, call: Call[ViewT]) -> RequestFeatures:
        """What the policy's rules look at."""
        ...

    # The response cache.

    @property
    def ignored_fields(self) -> frozenset[str]:
        """Top-level fields that never change the answer: left out of the cache key (every other one is in)."""
        ...

    def deterministic(self, body: Body[ViewT]) -> bool:
        """Whether the request asks for one reproducible answer (what `deterministic_only` caches)."""
        ...

    def cache_context(self, body: Body[ViewT]) -> Mapping[str, msgspec.Raw] | None:
        """For a semantic cache: the fields as they stood before the request's question.

        Its semantic namespace is keyed on them. None when the request does not end with its question.
        """
        ...

    def wants_usage(self, body: Body[ViewT]) -> bool:
        """Whether a streamed answer keeps its usage event for the caller."""
        ...

    def stored(self, answer: bytes) -> bytes:
        """The cache entry of a whole answer."""
        ...

    def stored_stream(self, events: bytes) -> bytes | None:
        """The cache entry of a stream's events, when they end as a finished stream does (else None)."""
        ...

    def replay(self, stored: bytes, *, stream: bool, wants_usage: bool) -> Replay:
        """A cache entry as the answer to a new request, in the form it asks for.

        Raises:
            UnreadableAnswerError: the entry does not read (stored by another version, changed in Redis).
        """
        ...

    def replayable(self, stored: bytes) -> bool:
        """Whether an entry replays in both forms (checked before it is stored)."""
        ...

    # Streams.

    def take_usage(self, events: bytes, *, keep: bool) -> UsageFound:
        """The usage in a run of events, if any (the usage-only event dropped unless `keep`).

        Raises:
            UpstreamError: a usage event cannot be read.
        """
        ...

    def ends(self, events: bytes) -> bool:
        """Whether a run of events ends with the stream's end event."""
        ...

    @property
    def end_event(self) -> bytes:
        """The event that ends every stream sent to a client."""
        ...

    def error_event(self, error: ProxyError) -> bytes:
        """The event that reports an error after a stream's first event (the end event follows it)."""
        ...

    # Errors.

    def upstream_error(self, body: Body[ViewT], error: ProxyError) -> ProxyError:
        """What a route's `error` means for this request: `error` itself, or the caller's own error.

        A request that names something an upstream holds (a Responses `previous_response_id`) may get that
        upstream's 404 for it: the caller's `NotFoundError`, which neither moves the route's breaker nor
        falls back, since any client could send such ids.
        """
        ...
