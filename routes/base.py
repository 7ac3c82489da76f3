"""The `Route` Protocol every destination implements, and the values that cross it.

A route gets a `Call` of any endpoint kind it serves (`Route.endpoints`) and answers it with an `Answer`
or an `AnswerStream`. Everything a route adds to the client's response travels in that result (extra
headers: the RAG route's `x-turnout-sources`); nothing is written back into the call. What embedding the
request's question cost is kept by the call's own `Question`, which the pipeline reads at its end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol

from proxy.wire.endpoint import Body, Endpoint, ViewT
from proxy.wire.schemas import ChatRequest, Usage
from routes.knowledge.embedding import Question

__all__ = ["Answer", "AnswerStream", "Call", "ChatCall", "Route"]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Call(Generic[ViewT]):
    """One request as a route receives it."""

    endpoint: Endpoint[ViewT]
    """Its endpoint kind: the upstream path, how to rewrite the body and read the answer."""
    body: Body[ViewT]
    """The body, decoded once: its typed view for decisions, its bytes and raw members for forwarding."""
    headers: Mapping[str, str]
    """End-to-end headers to send upstream (the client's, minus credentials and hop-by-hop, plus the request id)."""
    caller: str | None = None
    """Who is calling (the key's name with `auth: keys`, else from `x-turnout-caller`); never sent upstream."""
    team: str | None = None
    """The calling key's team (with `auth: keys`); never sent upstream."""
    credential: str = ""
    """A digest of the client's own key (`Authorization`, `api-key`), so that the response cache never gives
    one key's answers to another; "" without one. Never sent upstream."""
    deadline: str | None = None
    """The client's `x-turnout-timeout` as it was sent (the proxy reads it); never sent upstream."""
    question: Question = field(init=False, repr=False, compare=False)
    """The request's question, embedded when something needs its meaning (and what that cost): its own."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "question", Question(self.endpoint.question(self.body)))

    @property
    def request(self) -> ViewT:
        """The typed view of the body, for decisions."""
        return self.body.view

    @property
    def raw(self) -> bytes:
        """The body exactly as the client sent it, for forwarding."""
        return self.body.raw


ChatCall = Call[ChatRequest]
"""A chat completions call (what the RAG route answers)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A finished, successful non-streaming answer."""

    body: bytes
    """The response body as the upstream sent it (plus what the route adds, such as the RAG sources)."""
    model: str | None
    """The model that really answered, as the upstream reported it."""
    usage: Usage | None
    """Token counts, when the upstream reported them."""
    headers: Headers = ()
    """Headers the route adds to the client's response."""


@dataclass(frozen=True, slots=True)
class AnswerStream:
    """A streamed answer, opened: what the route added, and its events to come."""

    events: AsyncGenerator[bytes, None]
    """Whole SSE events as they arrive; the last item ends with the endpoint's end event.

    Each item holds the events that arrived together (never empty, each event ending in a blank line),
    so that the relay can write them to the client at once without parsing them. The usage is included
    when the upstream can send it. Errors raise `ProxyError` instead of ending the stream: before the
    first item they become a JSON error response, after it an SSE error event.
    """
    headers: Headers = ()
    """Headers the route adds to the client's response (known before the first event)."""


class Route(Protocol):
    """A destination: an OpenAI-compatible upstream, or a composition of routes."""

    @property
    def name(self) -> str:
        """The route's name in the policy file."""
        ...

    @property
    def model(self) -> str | None:
        """The upstream model it asks for, whatever the caller's `model` (None: the caller's own).

        Answers are priced by it when the upstream does not say which model answered; a cache keys on it.
        """
        ...

    @property
    def cache_scope(self) -> str:
        """What its answers depend on besides the request and the model, for a cache to key on ("" when nothing).

        A RAG route's: the knowledge index's version and the retrieval settings.
        """
        ...

    @property
    def endpoints(self) -> frozenset[str]:
        """The endpoint kinds it serves (`chat`: chat completions)."""
        ...

    async def complete(self, call: Call[Any]) -> Answer:
        """Answer `call` in one response.

        Raises:
            ProxyError: any failure, already mapped to what the caller should see.
        """
        ...

    async def stream(self, call: Call[Any]) -> AnswerStream:
        """Open a streamed answer to `call` (work before its first event, a retrieval say, happens here).

        Raises:
            ProxyError: a failure before the stream could open.
        """
        ...
