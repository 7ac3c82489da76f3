"""Which of a caller's request headers travel on to the upstream, and which stay behind."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["forwardable_headers"]

# Hop-by-hop headers (RFC 9110 §7.6.1), the caller's credentials (Turnout adds the upstream's own key),
# and what the HTTP client sets itself (length, host, encoding it can decode, content type).
_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"authorization",
        b"api-key",
        b"x-api-key",
        b"cookie",
        b"openai-organization",
        b"openai-project",
        b"host",
        b"content-length",
        b"content-type",
        b"accept-encoding",
        b"expect",
        b"x-request-id",
    }
)


def forwardable_headers(raw: Iterable[tuple[bytes, bytes]], request_id: str) -> dict[str, str]:
    """The end-to-end headers of an ASGI request to send upstream, with Turnout's `x-request-id`.

    Also drops any header that the request's own `Connection` header names as hop-by-hop, and Turnout's
    own `x-turnout-*` headers (the caller's name, ...), which are meant for Turnout alone.
    """
    headers: dict[str, str] = {}
    named_hop: set[bytes] = set()
    for name, value in raw:
        if name == b"connection":
            named_hop.update(token.strip().lower() for token in value.split(b","))
        if name not in _DROPPED and not name.startswith(b"x-turnout-"):
            headers[name.decode("latin-1")] = value.decode("latin-1")
    for name in named_hop:
        headers.pop(name.decode("latin-1"), None)
    headers["x-request-id"] = request_id
    return headers
