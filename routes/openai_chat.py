"""`OpenAIChatRoute`: one OpenAI-compatible upstream and model (ft:gpt-4.1-mini..., gpt-4.1, ...); SSE passthrough.

The route kind `openai`, the default: a policy file's route without a `kind` is one of these.

```yaml
routes:
  support-ft: {upstream: openai, model: "ft:gpt-4.1-mini-2025-04-14:acme::8Xyz", timeout: 30}
  embed: {upstream: openai, model: text-embedding-3-small, endpoints: [embeddings]}
```

`endpoints` lists the endpoint kinds the route serves (by default the conversations, `chat` and `responses`):
a route for embeddings or legacy completions says so.

Endpoint-agnostic: a call's `Endpoint` names the upstream path, rewrites the body (the route's `model`,
the usage a stream must report) and says whether an answer or a stream's events read.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import msgspec

from proxy.wire.answers import UnreadableAnswerError
from proxy.wire.errors import UpstreamError, upstream_stream_error
from proxy.wire.sse import EventSplitter
from routes.base import Answer, AnswerStream, Call
from routes.kind import CONVERSATIONS, BuildContext, CheckContext, EndpointKind, RouteSettings, Seconds
from routes.upstream import Upstream, UpstreamPath

__all__ = ["OpenAIChatRoute", "OpenAIChatSettings"]


class OpenAIChatSettings(RouteSettings, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="openai"):
    """A destination: an upstream and the model to ask it for (None: the caller's own `model`)."""

    upstream: str
    model: str | None = None
    timeout: Seconds | None = None
    """Seconds for a whole request on this route (the upstream's `total` when unset)."""
    endpoints: Annotated[tuple[EndpointKind, ...], msgspec.Meta(min_length=1)] = CONVERSATIONS
    """The endpoint kinds it serves: by default the conversations (`chat`, `responses`)."""

    def check(self, name: str, context: CheckContext) -> None:
        """The upstream must be one the file declares."""
        if self.upstream not in context.upstreams:
            known = ", ".join(context.upstreams) or "none"
            raise context.fail(("upstream",), f"route '{name}': unknown upstream '{self.upstream}' ({known})")

    def build(self, name: str, context: BuildContext) -> OpenAIChatRoute:
        """The route on its upstream."""
        upstream = context.upstreams[self.upstream]
        return OpenAIChatRoute(name, upstream, self.model, self.timeout, endpoints=frozenset(self.endpoints))


def _unreadable(upstream: Upstream, what: str, reason: str) -> UpstreamError:
    """The 502 for an answer Turnout cannot read: the upstream's fault, said without quoting the answer."""
    return UpstreamError(f"The upstream '{upstream.name}' sent {what} that Turnout cannot read: {reason}.")


class OpenAIChatRoute:
    """Send requests to one upstream, with this route's model (or the caller's, when `model` is None)."""

    __slots__ = ("_timeout", "endpoints", "model", "name", "upstream")

    cache_scope = ""
    """Nothing but the request (and the model) decides the answer."""

    def __init__(
        self,
        name: str,
        upstream: Upstream,
        model: str | None = None,
        timeout: float | None = None,
        *,
        endpoints: frozenset[str] = frozenset(CONVERSATIONS),
    ) -> None:
        self.name = name
        self.upstream = upstream
        self.model = model
        self.endpoints = endpoints
        """The endpoint kinds it serves (its `endpoints` setting)."""
        self._timeout = upstream.timeout(timeout)

    def __repr__(self) -> str:
        return f"OpenAIChatRoute(name={self.name!r}, upstream={self.upstream.name!r}, model={self.model!r})"

    async def complete(self, call: Call[Any]) -> Answer:
        """Post the request and return the upstream's answer as it came.

        Raises:
            UpstreamError: also when the answer is not one Turnout can read (`proxy.wire.answers`): it
                would not be priced, cached or replayed, and the caller's own JSON reader may choke on it.
        """
        endpoint = call.endpoint
        body = endpoint.upstream_body(call.body, model=self.model, stream=False)
        content, _ = await self.upstream.post(UpstreamPath(*endpoint.path), body, call.headers, self._timeout)
        try:
            model, usage = endpoint.read_answer(content)
        except UnreadableAnswerError as exc:
            raise _unreadable(self.upstream, "an answer", str(exc)) from None
        return Answer(body=content, model=model, usage=usage)

    async def stream(self, call: Call[Any]) -> AnswerStream:
        """The upstream's stream (asked to report its usage): the whole events of each read, its end last."""
        return AnswerStream(events=self._events(call))

    async def _events(self, call: Call[Any]) -> AsyncGenerator[bytes, None]:
        endpoint, upstream = call.endpoint, self.upstream
        body = endpoint.upstream_body(call.body, model=self.model, stream=True)
        splitter = EventSplitter()
        path = UpstreamPath(*endpoint.path)
        async with contextlib.aclosing(upstream.post_stream(path, body, call.headers, self._timeout)) as chunks:
            async for chunk in chunks:
                # Whole events only, so no secret is cut in two between reads and missed.
                cut = endpoint.cut(upstream.redactor.data(splitter.feed(chunk)))
                if cut.events:
                    yield cut.events
                if cut.ended:  # anything after the end is dropped
                    return
                if cut.unreadable is not None:
                    raise _unreadable(upstream, "a stream chunk", cut.unreadable)
                if cut.error is not None:
                    error = upstream_stream_error(cut.error, redactor=upstream.redactor)
                    raise error if error is not None else UpstreamError("The upstream failed mid-stream.")
        raise UpstreamError(f"The upstream '{upstream.name}' ended the stream before [DONE].")
