"""`OpenAIChatRoute`: one OpenAI-compatible upstream and model (ft:gpt-3.5-turbo..., gpt-4, ...); SSE passthrough.

The route kind `openai`, the default: a policy file's route without a `kind` is one of these.

```yaml
routes:
  support-ft: {upstream: openai, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz", timeout: 30}
```
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from proxy.wire.answers import ChunkView, CompletionView, UnreadableAnswerError, read_answer
from proxy.wire.errors import UpstreamError, upstream_stream_error
from proxy.wire.sse import DONE, DONE_EVENT, EventSplitter, event_data, find_done, split_events
from routes.base import ChatCall, Completion
from routes.kind import BuildContext, CheckContext, RouteSettings, Seconds
from routes.upstream import Upstream, UpstreamPath

__all__ = ["OpenAIChatRoute", "OpenAIChatSettings"]

_PATH = UpstreamPath("chat", "completions")


class OpenAIChatSettings(RouteSettings, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="openai"):
    """A destination: an upstream and the model to ask it for (None: the caller's own `model`)."""

    upstream: str
    model: str | None = None
    timeout: Seconds | None = None
    """Seconds for a whole request on this route (the upstream's `total` when unset)."""

    def check(self, name: str, context: CheckContext) -> None:
        """The upstream must be one the file declares."""
        if self.upstream not in context.upstreams:
            known = ", ".join(context.upstreams) or "none"
            raise context.fail(("upstream",), f"route '{name}': unknown upstream '{self.upstream}' ({known})")

    def build(self, name: str, context: BuildContext) -> OpenAIChatRoute:
        """The route on its upstream."""
        return OpenAIChatRoute(name, context.upstreams[self.upstream], self.model, self.timeout)


def _unreadable(upstream: Upstream, what: str, exc: UnreadableAnswerError) -> UpstreamError:
    """The 502 for an answer Turnout cannot read: the upstream's fault, said without quoting the answer."""
    return UpstreamError(f"The upstream '{upstream.name}' sent {what} that Turnout cannot read: {exc}.")


class OpenAIChatRoute:
    """Send chat requests to one upstream, with this route's model (or the caller's, when `model` is None)."""

    __slots__ = ("_timeout", "model", "name", "upstream")

    cache_scope = ""
    """Nothing but the request (and the model) decides the answer."""
    endpoints = frozenset({"chat"})

    def __init__(self, name: str, upstream: Upstream, model: str | None = None, timeout: float | None = None) -> None:
        self.name = name
        self.upstream = upstream
        self.model = model
        self._timeout = upstream.timeout(timeout)

    def __repr__(self) -> str:
        return f"OpenAIChatRoute(name={self.name!r}, upstream={self.upstream.name!r}, model={self.model!r})"

    async def complete(self, call: ChatCall) -> Completion:
        """Post the request and return the upstream's answer as it came.

        Raises:
            UpstreamError: also when the answer is not a completion Turnout can read (`proxy.wire.answers`): it
                would not be priced, cached or replayed, and the caller's own JSON reader may choke on it.
        """
        body, _ = await self.upstream.post(_PATH, call.body.rewritten(model=self.model), call.headers, self._timeout)
        try:
            _, view = read_answer(body, CompletionView)
        except UnreadableAnswerError as exc:
            raise _unreadable(self.upstream, "a completion", exc) from None
        return Completion(body=body, model=view.model, usage=view.usage)

    async def stream(self, call: ChatCall) -> AsyncGenerator[bytes, None]:
        """Post the request with `include_usage` on and yield the whole events of each read, `[DONE]` last."""
        body = call.body.rewritten(model=self.model, include_usage=True)
        splitter = EventSplitter()
        async with contextlib.aclosing(self.upstream.post_stream(_PATH, body, call.headers, self._timeout)) as chunks:
            async for chunk in chunks:
                # Whole events only, so no secret is cut in two between reads and missed.
                events, error = _split_at_fault(self.upstream.redactor.data(splitter.feed(chunk)), self.upstream)
                done = find_done(events)
                if done >= 0:  # anything after [DONE] is dropped; [DONE] itself is normalised
                    yield events[:done] + DONE_EVENT
                    return
                if events:
                    yield events
                if error is not None:
                    raise error
        raise UpstreamError(f"The upstream '{self.upstream.name}' ended the stream before [DONE].")


def _split_at_fault(events: bytes, upstream: Upstream) -> tuple[bytes, UpstreamError | None]:
    """The events before the first that ends the stream with an error, and that error (None if none does).

    An upstream's error event ends it, and so does an event Turnout cannot read as a chunk (`proxy.wire.answers`):
    the usage tee, the cache's replay and the caller's own reader read every chunk. Events after `[DONE]`
    are not looked at (they are dropped).
    """
    parts = split_events(events)
    for index, event in enumerate(parts):
        data = event_data(event)
        if not data:  # comments and `event:` lines carry no chunk
            continue
        if data == DONE:
            break
        try:
            read_answer(data, ChunkView)
        except UnreadableAnswerError as exc:
            error: UpstreamError | None = _unreadable(upstream, "a stream chunk", exc)
        else:
            error = upstream_stream_error(data, redactor=upstream.redactor)
        if error is not None:
            return b"".join(part + b"\n\n" for part in parts[:index]), error
    return events, None
