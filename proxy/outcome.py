"""`Outcome`: how a request was answered (route, rule, fallbacks, cache, the route's own headers); `OutcomeError`.

Both travel forward: the pipeline returns an `Outcome` with each answer, and a request that fails raises
`OutcomeError`, the error the client sees together with the outcome it belongs to; the handler turns either
into the response's `x-turnout-*` headers. Nothing rewrites an error's own headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.accounting.tally import CacheStatus
from proxy.wire.errors import ProxyError

__all__ = ["Outcome", "OutcomeError"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request was answered: the route that answered, the rule that sent it, the routes that failed."""

    route: str
    rule: str
    fallback_from: tuple[str, ...] = ()
    cache: CacheStatus = "bypass"
    route_headers: tuple[tuple[str, str], ...] = ()
    """Headers the answering route added (the RAG route's `x-turnout-sources`)."""

    def header_items(self) -> list[tuple[str, str]]:
        """The `x-turnout-*` response headers that show the decision."""
        items = [("x-turnout-route", self.route), ("x-turnout-rule", self.rule), ("x-turnout-cache", self.cache)]
        if self.fallback_from:
            items.append(("x-turnout-fallback-from", ",".join(self.fallback_from)))
        items.extend(self.route_headers)
        return items

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`header_items()` as raw ASGI headers."""
        return [(name.encode(), value.encode("latin-1")) for name, value in self.header_items()]


class OutcomeError(Exception):
    """A request the pipeline could not answer: the error the client sees, and the outcome it belongs to."""

    def __init__(self, error: ProxyError, outcome: Outcome) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome

    def headers(self) -> dict[str, str]:
        """The error's own headers (`retry-after`, ...) and the outcome's."""
        return {**self.error.headers, **dict(self.outcome.header_items())}
