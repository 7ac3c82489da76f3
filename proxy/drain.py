"""`DrainingHttpProtocol`: a connection that, once the server is told to stop, finishes without losing a request.

uvicorn's own drain closes every idle kept-alive connection the moment SIGTERM arrives. A client may have
sent its next request on one just then (a Kubernetes Service keeps a client's open connections on the old
pod after `preStop`): that request is lost, with no answer at all. Here an idle connection stays open for
`SHUTDOWN_LINGER` seconds more instead; a request that comes on it in that time is answered, with
`Connection: close`, and the client's next request opens a new connection (to another replica). A busy
connection closes after its response, as uvicorn does it. The server still stops within its drain timeout.
"""

from __future__ import annotations

from typing import Any

from proxy.protocol import _IDLE, TurnoutHttpProtocol  # the phase's name: protocol.py has no line left to spare

__all__ = ["SHUTDOWN_LINGER", "DrainingHttpProtocol"]

SHUTDOWN_LINGER = 1.0
"""Seconds an idle connection is kept open once the server stops, for a request already on its way (the default
of `server.shutdown_linger`)."""


class DrainingHttpProtocol(TurnoutHttpProtocol):
    """`TurnoutHttpProtocol` whose idle connections outlive the start of the server's shutdown a little."""

    _stopping = False
    """The server is stopping: every request still to come on this connection is its last."""

    def __init__(self, *args: Any, linger: float = SHUTDOWN_LINGER, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shutdown_linger = linger

    def shutdown(self) -> None:
        """Answer the requests under way and the next one (each with `Connection: close`); close idle ones soon."""
        if self._shutdown_linger <= 0:  # no lingering: uvicorn's own shutdown, idle connections closed at once
            super().shutdown()
            return
        self._stopping = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # the response under way is the connection's last
            return
        if self._phase == _IDLE:  # nothing on the way yet: it gets a short while, then the idle sweep closes it
            self._deadline = min(self._deadline, self.loop.time() + self._shutdown_linger)

    def on_headers_complete(self) -> None:
        """A request that arrived while the server stops is answered, and then the connection closes."""
        super().on_headers_complete()
        if self._stopping:
            self.cycle.keep_alive = False
