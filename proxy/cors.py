"""`Cors`: ASGI middleware that lets the pages of configured origins call Turnout (`server.cors`); off by default.

A browser sends `Origin` with every cross-origin request, and asks first (a preflight: `OPTIONS` with
`Access-Control-Request-Method`) before a POST with JSON or an `Authorization` header, which is every
OpenAI call. For an allowed origin the preflight is answered here (204, the methods, the allowed
headers, `max-age`), and every other response gets `Access-Control-Allow-Origin` and exposes the
`x-turnout-*` and `x-request-id` headers. A request from any other origin passes as it is, without
them: the browser keeps the page from reading the answer. No cookies are used, so credentials are not
allowed. Requests without `Origin` (servers, SDKs outside a browser) are untouched.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from proxy.config.sections import CorsSettings

__all__ = ["Cors"]

_METHODS = b"GET, POST, DELETE, OPTIONS"
_EXPOSED = (
    b"x-request-id, x-turnout-route, x-turnout-rule, x-turnout-cache, x-turnout-fallback-from, x-turnout-sources, "
    b"x-turnout-cost-usd, x-turnout-savings-usd, x-turnout-canary, server-timing, retry-after"
)
_SDK_HEADERS = b"x-stainless-"


class Cors:
    """Answers allowed origins' preflights and marks their responses readable; everything else passes."""

    def __init__(self, app: ASGIApp, settings: CorsSettings) -> None:
        self.app = app
        self._any = "*" in settings.origins
        self._origins = frozenset(origin.encode() for origin in settings.origins)
        self._headers = frozenset(header.lower().encode() for header in settings.headers)
        self._max_age = str(settings.max_age).encode()

    def _allowed(self, origin: bytes) -> bool:
        return self._any or origin in self._origins

    def _headers_allowed(self, asked: bytes) -> bool:
        names = (name.strip().lower() for name in asked.split(b","))
        return all(not name or name in self._headers or name.startswith(_SDK_HEADERS) for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is None or not self._allowed(origin):
            await self.app(scope, receive, send)
            return
        asked = headers.get(b"access-control-request-method")
        if scope["method"] == "OPTIONS" and asked is not None:
            await self._preflight(send, origin, headers.get(b"access-control-request-headers", b""))
            return

        async def send_readable(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", origin),
                    (b"access-control-expose-headers", _EXPOSED),
                    (b"vary", b"origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_readable)

    async def _preflight(self, send: Send, origin: bytes, asked_headers: bytes) -> None:
        """204 with what the page may do; headers it may not send are left out (the browser then refuses)."""
        allowed = asked_headers if self._headers_allowed(asked_headers) else b", ".join(sorted(self._headers))
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", _METHODS),
            (b"access-control-allow-headers", allowed),
            (b"access-control-max-age", self._max_age),
            (b"vary", b"origin, access-control-request-method, access-control-request-headers"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
