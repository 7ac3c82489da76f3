"""`Exchange`: one request and its answer as the traffic log keeps it, and its JSON-ready row form.

An exchange is what a reader of the log gets back (`TrafficStore.exchanges()`): the decision, the answer,
usage, money and latencies, the caller, and (when the policy keeps content) the request as the client sent
it and the answer, both after redaction. Money is `Decimal` (exact), times are unix seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any, cast

__all__ = ["CONTENT_FIELDS", "FEEDBACK_FIELDS", "Exchange"]

CONTENT_FIELDS = ("request", "answer")
"""The fields kept only when the policy logs content (`log: content`)."""
FEEDBACK_FIELDS = ("score", "label", "comment")
"""The fields `TrafficStore.feedback()` sets after the exchange was written."""
_MONEY = ("cost", "baseline", "savings")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One logged exchange (a request and what answered it)."""

    request_id: str
    at: float
    """When the request arrived, in unix seconds."""
    endpoint: str
    """`chat.completions`, `responses`, `completions`, `embeddings`, or the path of a pass-through request."""
    stream: bool
    caller: str | None
    team: str | None
    route: str | None
    rule: str | None
    reason: str | None
    model: str | None
    """The model that answered."""
    fallbacks: tuple[str, ...]
    """The routes that failed before the one that answered, in order."""
    status: int
    error: str | None
    """What went wrong (the error's type and message) when the exchange failed or broke off."""
    cache: str | None
    """`hit`, `miss`, or None (not cacheable, or the cache was bypassed)."""
    usage: dict[str, Any] | None
    """The OpenAI usage object as the upstream reported it."""
    cost: Decimal | None
    baseline: Decimal | None
    savings: Decimal | None
    latency_ms: float | None
    ttfb_ms: float | None
    request: dict[str, Any] | None
    """The JSON body as the client sent it, after redaction; None unless content is logged."""
    answer: dict[str, Any] | None
    """The response body (a stream assembled into the non-stream shape, tool calls included), after redaction;
    None unless content is logged."""
    score: float | None = None
    label: str | None = None
    comment: str | None = None

    def to_row(self) -> dict[str, Any]:
        """The exchange as JSON-ready values: money as decimal strings, `fallbacks` as a list."""
        row = {field.name: getattr(self, field.name) for field in fields(self)}
        for name in _MONEY:
            if row[name] is not None:
                row[name] = str(row[name])
        row["fallbacks"] = list(self.fallbacks)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Exchange:
        """The exchange of a `to_row()` mapping (missing optional fields are None; unknown keys are ignored)."""
        names = {field.name for field in fields(cls)}
        values: dict[str, Any] = {name: row.get(name) for name in names}
        for name in _MONEY:
            if values[name] is not None:
                values[name] = Decimal(str(values[name]))
        values["fallbacks"] = tuple(cast("list[str]", values["fallbacks"] or ()))
        values["stream"] = bool(values["stream"])
        values["at"] = float(values["at"])
        values["status"] = int(values["status"])
        return cls(**values)

    def without_content(self) -> Exchange:
        """The exchange with `request` and `answer` left out."""
        return replace(self, request=None, answer=None)
