"""A TCP relay on loopback that can lose replies: the command reaches the server and runs, its reply never returns.

Put it between a client and a Redis server (`LossyLink(port).url(password)`) and call
`lose_replies_to(b"NX")`: from the moment a connection sends bytes that contain the marker (a RESP
argument, here the `NX` of `SET key token NX PX ttl`), nothing more the server sends on that connection
reaches the client, so the client's command times out although the server ran it: the case of a lost
reply, or of a link that fails one way. Redis clients send one command at a time on a connection
(redis-py does here), so the replies lost are that command's and any later ones on that connection.

Threads and blocking sockets, so it serves a client in this process or in a subprocess alike.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["LossyLink"]


class LossyLink:
    """Relays 127.0.0.1:`port` (an ephemeral port of its own) to 127.0.0.1:`target`."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.lost = 0
        """Connections whose replies were cut off so far."""
        threading.Thread(target=self._accept, name="lossy-link", daemon=True).start()

    def url(self, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def lose_replies_to(self, marker: bytes | None) -> None:
        """From now on, a connection that sends `marker` gets no more replies (None: lose nothing new)."""
        self._marker = marker

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._sockets |= {client, server}
            muted = threading.Event()
            threading.Thread(target=self._pump, args=(client, server, muted, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, muted, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, muted: threading.Event, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if upstream:
                    marker = self._marker
                    if marker is not None and marker in data and not muted.is_set():
                        muted.set()
                        self.lost += 1
                    sink.sendall(data)
                elif not muted.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets -= {source, sink}
