"""ASGI middleware: assign or propagate `x-request-id` on every response. Never routing or business logic."""

from __future__ import annotations

import itertools
import re
import secrets

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "request_id_of"]

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode()
_STATE_KEY = "turnout_request_id"
# A caller's id is kept when it is a plain token: it ends up in logs and upstream headers.
_VALID_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class _RequestIds:
    """Unique ids without a syscall each: a random prefix per process, then a counter.

    `uuid4()` reads `os.urandom` every time: about a tenth of a proxied request's time in a profile.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return f"{self._prefix}{next(self._counter):012x}".encode()


def request_id_of(scope: Scope) -> str:
    """The request id that `RequestIdMiddleware` put in this request's scope."""
    return str(scope["state"][_STATE_KEY])


class RequestIdMiddleware:
    """Take the caller's `x-request-id` (when it is a plain token) or create one; echo it on the response.

    Raw ASGI rather than Litestar's middleware base: it runs on every request, including the framework's
    own 404s, and costs one header scan.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._ids = _RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = b""
        for name, value in scope["headers"]:
            if name == _HEADER:
                if _VALID_ID.fullmatch(value):
                    request_id = value
                break
        if not request_id:
            request_id = self._ids.next()
        scope.setdefault("state", {})[_STATE_KEY] = request_id.decode()
        header = (_HEADER, request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
