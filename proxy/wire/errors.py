"""The `ProxyError` tree: every error a client sees, as OpenAI-format JSON with its status.

```text
* ProxyError                      500 api_error
  x InvalidRequestError           400 invalid_request_error   (the caller's request is wrong)
    + NotFoundError               404
    + InvalidPathError            400 (a path or parameter that would leave the upstream endpoint it names)
    + MethodNotAllowedError       405
    + RequestTooLargeError        413
    + UnsupportedMediaTypeError   415
    + AuthenticationError         401 invalid_api_key       (no Turnout key, or not a valid one)
    + PermissionDeniedError       403 permission_denied     (a route or model the key may not use)
    + RateLimitError              429 rate_limit_exceeded, type `requests` (or `tokens`), with retry-after
      + QuotaExceededError        429 insufficient_quota    (the key's or team's budget is spent)
  x UpstreamError                 502 upstream_error          (the upstream failed, not the caller)  route failure
    + UpstreamRejectedError       400/422 as the upstream said, its message kept            not a route failure
    + UpstreamRateLimitError      429 with retry-after                                      route failure
    + UpstreamTimeoutError        504                                                       route failure
      + DeadlineExceededError     504 timeout (the request's deadline passed, every route tried that had time)
    + RouteUnavailableError       503 (a route's circuit is open: its fallbacks answer instead)  route failure
  x KnowledgeUnavailableError     503 (a RAG route's index is missing or made by another embedder)
```

Each class sets `status_code`, `type` and `code` (what the client sees), and how the pipeline and the
metrics classify it: `route_failure` (the route's trouble, not the caller's: fall back to another
route) and, where it does not depend on the upstream's status, `kind` (the metrics' name for it).
`retryable` and the other kinds are computed from the instance's `upstream_status`. An instance carries
the message, the `param` and, where it has them, the headers to send. This module imports nothing from
the project and no web framework, so routes and policies may raise these errors too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import msgspec

from proxy.wire.redaction import Redactor, redact

__all__ = [
    "AuthenticationError",
    "DeadlineExceededError",
    "InvalidPathError",
    "InvalidRequestError",
    "KnowledgeUnavailableError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProxyError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTooLargeError",
    "RouteUnavailableError",
    "TokenRateLimitError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "UpstreamRateLimitError",
    "UpstreamRejectedError",
    "UpstreamTimeoutError",
    "error_body",
    "redact",
    "upstream_status_error",
    "upstream_stream_error",
]

_NO_SECRETS = Redactor()
"""For mappings called without the settings' secrets (tests, tools): patterns only."""


class _ErrorDetail(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    code: str | None


class _ErrorBody(msgspec.Struct, frozen=True):
    error: _ErrorDetail


class ProxyError(Exception):
    """Base of every error Turnout reports to a client; also the last-resort 500."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str | None] = None
    route_failure: ClassVar[bool] = False
    """The route's trouble (429, 5xx, timeouts, no answer), not a 400 the caller caused: it moves the breaker,
    and the request falls back to the next route."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = redact(message)
        super().__init__(self.message)
        self.param = None if param is None else redact(param)
        self.instance_code = redact(code) if code is not None else self.code
        self.status = status_code if status_code is not None else self.status_code
        self.headers: Mapping[str, str] = headers or {}
        self.upstream_status: int | None = None
        """The upstream's own status, when this error maps an upstream's answer."""

    @property
    def retryable(self) -> bool:
        """Worth another try on the same route: a route failure, unless it refused Turnout's key or model.

        On a 401, 403 or 404 from the upstream only a fallback can get around it.
        """
        return self.route_failure and self.upstream_status not in (401, 403, 404)

    @property
    def kind(self) -> str:
        """A fixed name for what went wrong upstream, a metric label: `rate_limit`, `timeout`, `auth`, ....

        By the upstream's status where the class does not fix it: `auth` (401, 403), `not_found` (404),
        `server_error` (any other), `connection` (no answer at all).
        """
        status = self.upstream_status
        if status in (401, 403):
            return "auth"
        if status == 404:
            return "not_found"
        return "connection" if status is None else "server_error"

    def body(self) -> bytes:
        """The OpenAI error body for this error, encoded as JSON."""
        return error_body(self.message, self.type, param=self.param, code=self.instance_code)


class InvalidRequestError(ProxyError):
    """The caller's request is malformed or breaks a limit."""

    status_code = 400
    type = "invalid_request_error"


class NotFoundError(InvalidRequestError):
    """No such endpoint or resource."""

    status_code = 404
    code = "not_found"


class InvalidPathError(InvalidRequestError):
    """A path or path parameter bound for an upstream that could leave the endpoint it names.

    `..` or `.`, a slash or backslash (encoded or not) inside a parameter, a malformed escape: refused
    before any upstream is called (`routes.upstream.UpstreamPath`).
    """

    code = "invalid_path"


class MethodNotAllowedError(InvalidRequestError):
    """The endpoint exists but not for this HTTP method."""

    status_code = 405
    code = "method_not_allowed"


class RequestTooLargeError(InvalidRequestError):
    """The request body is larger than the configured limit."""

    status_code = 413
    code = "request_too_large"


class UnsupportedMediaTypeError(InvalidRequestError):
    """The request body is not JSON."""

    status_code = 415
    code = "unsupported_media_type"


class AuthenticationError(InvalidRequestError):
    """No Turnout key, or one that is not valid (unknown, revoked and expired look alike)."""

    status_code = 401
    code = "invalid_api_key"


class PermissionDeniedError(InvalidRequestError):
    """A valid key asking for a route or a model it may not use."""

    status_code = 403
    code = "permission_denied"


class RateLimitError(InvalidRequestError):
    """A caller's own limit (Turnout's, not the upstream's): requests per minute; `retry-after` says when to retry."""

    status_code = 429
    type = "requests"
    code = "rate_limit_exceeded"


class TokenRateLimitError(RateLimitError):
    """A caller's tokens per minute."""

    type = "tokens"


class QuotaExceededError(RateLimitError):
    """The key's or its team's budget for the period is spent: retrying does not help until the period ends."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamError(ProxyError):
    """The upstream could not be reached or failed; not the caller's fault."""

    status_code = 502
    type = "upstream_error"
    code: ClassVar[str | None] = "upstream_error"
    route_failure = True


class UpstreamRejectedError(UpstreamError):
    """The upstream refused the caller's request (400/422): its status and message are kept."""

    status_code = 400
    type = "invalid_request_error"
    code = None
    route_failure = False
    kind = "rejected"


class UpstreamRateLimitError(UpstreamError):
    """The upstream is rate limiting; the caller should retry after `retry-after` seconds."""

    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    kind = "rate_limit"


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time."""

    status_code = 504
    code = "upstream_timeout"
    kind = "timeout"


class DeadlineExceededError(UpstreamTimeoutError):
    """The request's deadline passed before any route answered (`proxy.deadline`)."""

    type = "timeout_error"
    code = "timeout"


class RouteUnavailableError(UpstreamError):
    """A route has failed repeatedly and its circuit is open: the request goes on to its fallbacks.

    Raised and caught inside the pipeline; the last route a request can take is always tried.
    """

    status_code = 503
    code = "route_unavailable"
    kind = "circuit_open"


class KnowledgeUnavailableError(ProxyError):
    """A RAG route cannot search its knowledge index: it is missing, unreadable or made by another embedder."""

    status_code = 503
    code = "knowledge_index_unavailable"


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> bytes:
    """Encode an OpenAI error body: `{"error": {"message", "type", "param", "code"}}`."""
    return msgspec.json.encode(_ErrorBody(_ErrorDetail(message=message, type=type_, param=param, code=code)))


_ERROR_TEXT = 500
"""Characters of a plain-text upstream error body that the caller sees."""


class _UpstreamErrorView(msgspec.Struct):
    message: str | None = None
    param: str | None = None
    code: str | int | None = None
    type: str | None = None


class _UpstreamErrorBodyView(msgspec.Struct):
    error: _UpstreamErrorView | str | None = None


def _upstream_detail(body: bytes, redactor: Redactor) -> _UpstreamErrorView:
    """What an upstream error body says (OpenAI-format JSON, other JSON or plain text), secrets removed.

    Every field that reaches the caller is redacted here, the `param` and `code` as well as the message:
    a hostile or buggy upstream may echo the key it was sent in any of them.
    """
    try:
        error = msgspec.json.decode(body, type=_UpstreamErrorBodyView).error
    except (msgspec.DecodeError, RecursionError):  # skipping what it does not keep recurses: as deep as it nests
        error = None
    if isinstance(error, _UpstreamErrorView):
        code = None if error.code is None else str(error.code)
        return _UpstreamErrorView(
            message=redactor.optional(error.message),
            param=redactor.optional(error.param),
            code=redactor.optional(code),
            type=error.type,
        )
    if isinstance(error, str):
        return _UpstreamErrorView(message=redactor.text(error))
    # Redacted before it is cut short: a secret across the cut would otherwise leave its first characters.
    text = redactor.data(body[: _ERROR_TEXT * 8]).decode("utf-8", "replace")
    return _UpstreamErrorView(message=redactor.text(text)[:_ERROR_TEXT].strip() or None)


def upstream_stream_error(payload: bytes, *, redactor: Redactor = _NO_SECRETS) -> UpstreamError | None:
    """The error an upstream sent as an SSE event mid-stream (`data: {"error": ...}`), if `payload` is one.

    `redactor` removes the secrets Turnout holds from the upstream's message (the patterns apply either way).
    """
    if b'"error"' not in payload:  # content chunks never carry the key; escaped text cannot match
        return None
    try:
        error = msgspec.json.decode(payload, type=_UpstreamErrorBodyView).error
    except (msgspec.DecodeError, RecursionError):
        return None
    if error is None:
        return None
    message = redactor.optional(error if isinstance(error, str) else error.message)
    return UpstreamError(f"The upstream failed mid-stream: {message or 'no reason given'}")


def upstream_status_error(
    status: int, body: bytes, *, retry_after: str | None = None, redactor: Redactor = _NO_SECRETS
) -> ProxyError:
    """Map an upstream's non-2xx response to the error the caller sees.

    400/422 are the caller's request: same status, the upstream's message and param kept. 401/403/404
    mean Turnout's own key or model is wrong, so the caller gets a 502 that does not echo the upstream's
    text. 429 stays 429 with `retry-after`; everything else (5xx, odd statuses) is a 502. `redactor`
    removes the secrets Turnout holds from everything kept (message, param, code, `retry-after`).
    """
    retry_after = redactor.optional(retry_after)
    error = _map_upstream_status(status, _upstream_detail(body, redactor), retry_after)
    error.upstream_status = status
    return error


def _map_upstream_status(status: int, detail: _UpstreamErrorView, retry_after: str | None) -> ProxyError:
    message = detail.message or f"The upstream answered with status {status}."
    code = None if detail.code is None else str(detail.code)
    if status in (400, 422):
        return UpstreamRejectedError(message, param=detail.param, code=code, status_code=status)
    if status == 429:
        # Clients back off by this header; when the upstream sent none, one second is the SDKs' own floor.
        return UpstreamRateLimitError(message, code=code, headers={"retry-after": retry_after or "1"})
    if status in (401, 403):
        return UpstreamError(f"The upstream refused Turnout's credentials (status {status}); check its API key.")
    if status == 404:
        return UpstreamError("The upstream does not know the requested model or endpoint (status 404).")
    return UpstreamError(f"The upstream failed with status {status}: {message}")
