"""The `Route` Protocol every destination implements, and the values that cross it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from proxy.wire.schemas import ChatBody, ChatRequest, Usage

__all__ = ["ChatCall", "Completion", "Route"]


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One chat request as a route receives it."""

    body: ChatBody
    """The body, decoded once: its typed view for decisions, its bytes and raw members for forwarding."""
    headers: Mapping[str, str]
    """End-to-end headers to send upstream (the client's, minus credentials and hop-by-hop, plus the request id)."""
    caller: str | None = None
    """Who is calling (from `x-turnout-caller` until API keys with names arrive); never sent upstream."""
    reply_headers: dict[str, str] = field(default_factory=dict)
    """Headers the route that answers adds to the client's response (the RAG route's `x-turnout-sources`).

    Filled while a route runs (before a stream's first event); the pipeline empties it before each try.
    """
    credential: str = ""
    """A digest of the client's own key (`Authorization`, `api-key`), so that the response cache never gives
    one key's answers to another; "" without one. Never sent upstream."""

    @property
    def request(self) -> ChatRequest:
        """The typed view of the body, for decisions."""
        return self.body.request

    @property
    def raw(self) -> bytes:
        """The body exactly as the client sent it, for forwarding."""
        return self.body.raw


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished, successful non-streaming answer."""

    body: bytes
    """The response body as the upstream sent it (OpenAI `chat.completion` JSON)."""
    model: str | None
    """The model that really answered, as the upstream reported it."""
    usage: Usage | None
    """Token counts, when the upstream reported them."""


class Route(Protocol):
    """A destination for chat requests: an OpenAI-compatible upstream, or a composition of routes."""

    name: str

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

    async def complete(self, call: ChatCall) -> Completion:
        """Answer `call` in one response.

        Raises:
            ProxyError: any failure, already mapped to what the caller should see.
        """
        ...

    def stream(self, call: ChatCall) -> AsyncGenerator[bytes, None]:
        """Answer `call` as a stream of whole SSE events; the last item ends with `data: [DONE]`.

        Each item holds the events that arrived together (never empty, each event ending in a blank
        line), so that the relay can write them to the client at once without parsing them. The final
        usage chunk is included when the upstream can send it. Errors raise `ProxyError` instead of
        ending with `[DONE]`: before the first item they become a JSON error response, after it an SSE
        error event.
        """
        ...
