"""A bare HTTP/1.1 client on a socket: send any bytes at all, read back exactly what the server answers.

Every HTTP client library refuses to send the requests these tests are about (a NUL in a header, two
Content-Lengths, a request line that is not one), so they are written byte by byte. The reading side
parses one response (Content-Length, chunked, or up to the close) and, on request, waits for the
server to close the connection, keeping whatever else it sent first: a second response to one request
is a smuggled one.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

from tests.fuzz.checks import Reply

__all__ = ["EXCHANGE_TIMEOUT", "Exchange", "SilenceError", "exchange", "request"]

EXCHANGE_TIMEOUT = 10.0
"""Seconds the server gets for each read: a hang guard, never reached by an answer or a close."""
_RECV = 65536


def request(head: str, *headers: str, body: bytes = b"") -> bytes:
    """`head` (the request line) and `headers`, CRLF-terminated, a blank line, then `body`."""
    return "".join(f"{line}\r\n" for line in (head, *headers)).encode("latin-1") + b"\r\n" + body


@dataclass(frozen=True)
class Exchange:
    """What one raw request got back."""

    reply: Reply | None
    """The first response, or None when the server closed the connection without sending a byte."""
    closed: bool | None
    """Whether the server closed the connection after its response (None: not waited for)."""
    after: bytes
    """Bytes the server sent after the first response, before it closed."""


class SilenceError(AssertionError):
    """The server neither sent anything nor closed the connection within `EXCHANGE_TIMEOUT`."""


class _Reader:
    """Buffered reads from a socket, with EOF and a timeout told apart."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def fill(self) -> bool:
        """Read once more; False at EOF (a reset counts as EOF)."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(_RECV)
        except ConnectionResetError:
            data = b""
        except TimeoutError as exc:
            raise SilenceError(
                f"the server sent nothing and kept the connection open for {EXCHANGE_TIMEOUT} s"
            ) from exc
        self.eof = not data
        self.buffer += data
        return bool(data)

    def until(self, marker: bytes) -> bytes | None:
        """Bytes up to and including `marker`, or None if the connection ended first."""
        while marker not in self.buffer:
            if not self.fill():
                return None
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self.fill():
                raise AssertionError(f"the response body ended after {len(self.buffer)} of {size} bytes")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        while self.fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


def _chunked(reader: _Reader) -> bytes:
    body = b""
    while True:
        line = reader.until(b"\r\n")
        assert line is not None, "the chunked response body was cut"
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            reader.until(b"\r\n")  # no trailers in Turnout's responses: the blank line after the last chunk
            return body
        body += reader.exactly(size)
        reader.exactly(2)


def _response(reader: _Reader) -> Reply | None:
    head = reader.until(b"\r\n\r\n")
    if head is None:
        assert not reader.buffer.strip(), f"the server sent a partial response and closed: {reader.buffer[:200]!r}"
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    version, status, *_ = status_line.split(" ", 2)
    assert version in ("HTTP/1.1", "HTTP/1.0"), f"not an HTTP/1 status line: {status_line!r}"
    headers = tuple((name.strip().lower(), value.strip()) for name, value in (line.split(":", 1) for line in lines))
    fields = dict(headers)
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = _chunked(reader)
    elif "content-length" in fields:
        body = reader.exactly(int(fields["content-length"]))
    else:
        body = reader.rest()
    return Reply(status=int(status), headers=headers, body=body)


def exchange(port: int, data: bytes, *, half_close: bool = False, wait_close: bool = False) -> Exchange:
    """Send `data` on a new connection to 127.0.0.1:`port` and read the answer.

    Args:
        port: Turnout's port.
        data: The bytes to send, exactly.
        half_close: Shut down the sending side afterwards: the server sees the end of the request stream.
        wait_close: After the response, wait for the server to close the connection (up to the timeout).

    Returns:
        The first response (or None), whether the server then closed, and anything it sent after it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_TIMEOUT) as sock:
        # The server may answer and close before it read everything (a header too large): that is fine.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        reader = _Reader(sock)
        reply = _response(reader)
        if not wait_close or reply is None:
            return Exchange(reply=reply, closed=None if reply else True, after=b"")
        try:
            after = reader.rest()
        except SilenceError:
            return Exchange(reply=reply, closed=False, after=reader.buffer)
        return Exchange(reply=reply, closed=True, after=after)
