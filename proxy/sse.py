"""Server-sent events framing for OpenAI streams: an incremental decoder and the event encoders.

A leaf module (it imports nothing from the project): routes decode upstream streams with it, the
proxy encodes what it relays, and tests read streams back with it.
"""

from __future__ import annotations

__all__ = ["DONE", "DONE_EVENT", "SSEDecoder", "encode_event"]

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


def encode_event(data: bytes) -> bytes:
    """Frame one `data:` payload as an SSE event."""
    return b"data: " + data + b"\n\n"


class SSEDecoder:
    """Split a byte stream into the `data` payloads of its events, as the bytes arrive.

    Follows the SSE parsing rules that matter for OpenAI-style streams: events end at a blank line (LF or
    CRLF; lone-CR line ends are not supported), several `data:` lines of one event are joined with a
    newline, one space after the colon is dropped, comment lines (`:`) and other fields (`event:`, `id:`,
    `retry:`) are ignored.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add `chunk` and return the payloads of the events it completed (maybe none)."""
        buffer = self._buffer + chunk
        if b"\r\n" in buffer:  # a CR split from its LF stays buffered until the LF arrives
            buffer = buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        payloads = []
        for event in events:
            data = self._data_of(event)
            if data is not None:
                payloads.append(data)
        return payloads

    @property
    def pending(self) -> bool:
        """Whether an incomplete event is still buffered (the stream was cut in the middle of one)."""
        return bool(self._buffer.strip())

    @staticmethod
    def _data_of(event: bytes) -> bytes | None:
        if event.startswith(b"data: ") and b"\n" not in event:  # the usual one-line event, fast
            return event[6:]
        lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            return None
        return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
