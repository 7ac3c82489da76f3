"""`OpenAIChatRoute`: one OpenAI-compatible upstream and model (ft:gpt-3.5-turbo..., gpt-4, ...); SSE passthrough."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import msgspec

from proxy.errors import UpstreamError, upstream_stream_error
from proxy.schemas import Usage
from proxy.sse import DONE_EVENT, EventSplitter, event_data, find_done, split_events
from routes.base import ChatCall, Completion
from routes.upstream import Upstream, UpstreamPath

__all__ = ["OpenAIChatRoute"]

_PATH = UpstreamPath("chat", "completions")


class _CompletionView(msgspec.Struct):
    model: str | None = None
    usage: Usage | None = None


_COMPLETION = msgspec.json.Decoder(_CompletionView)


class OpenAIChatRoute:
    """Send chat requests to one upstream, with this route's model (or the caller's, when `model` is None)."""

    __slots__ = ("_timeout", "model", "name", "upstream")

    def __init__(self, name: str, upstream: Upstream, model: str | None = None, timeout: float | None = None) -> None:
        self.name = name
        self.upstream = upstream
        self.model = model
        self._timeout = upstream.timeout(timeout)

    def __repr__(self) -> str:
        return f"OpenAIChatRoute(name={self.name!r}, upstream={self.upstream.name!r}, model={self.model!r})"

    async def complete(self, call: ChatCall) -> Completion:
        """Post the request and return the upstream's answer as it came."""
        body, _ = await self.upstream.post(_PATH, call.body.rewritten(model=self.model), call.headers, self._timeout)
        try:
            view = _COMPLETION.decode(body)
        except msgspec.DecodeError as exc:
            raise UpstreamError(f"The upstream '{self.upstream.name}' sent a completion that is not JSON.") from exc
        return Completion(body=body, model=view.model, usage=view.usage)

    async def stream(self, call: ChatCall) -> AsyncGenerator[bytes, None]:
        """Post the request with `include_usage` on and yield the whole events of each read, `[DONE]` last."""
        body = call.body.rewritten(model=self.model, include_usage=True)
        splitter = EventSplitter()
        async with contextlib.aclosing(self.upstream.post_stream(_PATH, body, call.headers, self._timeout)) as chunks:
            async for chunk in chunks:
                # Whole events only, so no secret is cut in two between reads and missed.
                events, error = _split_at_error(self.upstream.redactor.data(splitter.feed(chunk)), self.upstream)
                done = find_done(events)
                if done >= 0:  # anything after [DONE] is dropped; [DONE] itself is normalised
                    yield events[:done] + DONE_EVENT
                    return
                if events:
                    yield events
                if error is not None:
                    raise error
        raise UpstreamError(f"The upstream '{self.upstream.name}' ended the stream before [DONE].")


def _split_at_error(events: bytes, upstream: Upstream) -> tuple[bytes, UpstreamError | None]:
    """The events before an upstream's error event, and that error (the whole run and None if it has none)."""
    if b'"error"' not in events:  # content never carries the key: quotes inside strings are escaped
        return events, None
    parts = split_events(events)
    for index, event in enumerate(parts):
        data = event_data(event)
        error = upstream_stream_error(data, redactor=upstream.redactor) if data is not None else None
        if error is not None:
            return b"".join(part + b"\n\n" for part in parts[:index]), error
    return events, None
