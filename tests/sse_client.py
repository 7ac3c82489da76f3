"""`SSEDecoder`: a stream's bytes as the `data` payloads of its events, as a client reads them (for the tests)."""

from __future__ import annotations

from proxy.wire.sse import EventSplitter, event_data, split_events

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Split a byte stream into the `data` payloads of its events, as the bytes arrive."""

    __slots__ = ("_splitter",)

    def __init__(self) -> None:
        self._splitter = EventSplitter()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add `chunk` and return the payloads of the events it completed (maybe none)."""
        payloads = (event_data(event) for event in split_events(self._splitter.feed(chunk)))
        return [payload for payload in payloads if payload is not None]

    @property
    def pending(self) -> bool:
        """Whether an incomplete event is still buffered."""
        return self._splitter.pending
