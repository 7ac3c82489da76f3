"""The access log: one JSON line per request on the `turnout.access` logger, without message content by default.

No secret reaches it: the caller's credentials are never read into the `Tally`, and the log formatter
redacts anything key-like from every line anyway (message content included, when it is turned on).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import msgspec

from proxy.accounting.tally import Tally, usd
from proxy.wire.schemas import ChatMessage

__all__ = ["ACCESS_LOGGER", "AccessLine", "AccessLog", "Failure"]

ACCESS_LOGGER = "turnout.access"
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: logged only when they fail."""


class Failure(msgspec.Struct, kw_only=True):
    """What broke a response off after its status was sent: the error as the stream's error event carried it."""

    status: int
    """The status the error has (504 for a timeout, ...); the line's `status` stays what the client got."""
    type: str
    code: str | None
    message: str


class AccessLine(msgspec.Struct, kw_only=True):
    """The fields of one access log line (times in milliseconds, money in USD as decimal strings)."""

    ts: str
    request_id: str
    method: str
    path: str
    status: int
    caller: str | None = None
    team: str | None = None
    route: str | None = None
    rule: str | None = None
    fallback_from: list[str] | None = None
    model: str | None = None
    stream: bool = False
    cache: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: str | None = None
    baseline_cost_usd: str | None = None
    savings_usd: str | None = None
    cost_estimated: bool = False
    """The cost rests on estimated usage (a stream that ended before its upstream reported usage)."""
    duration_ms: float
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    retries: int = 0
    upstream_errors: list[str] | None = None
    failure: Failure | None = None
    """Set when the response broke off after it had begun (a failed stream); None for one that ended whole."""
    messages: list[ChatMessage] | None = None
    input: msgspec.Raw | None = None
    answer: list[str | None] | None = None


_ENCODER = msgspec.json.Encoder()


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else usd(amount)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class AccessLog:
    """Writes `AccessLine`s; `content=True` adds the request's content and a non-streamed answer's text."""

    def __init__(self, *, enabled: bool = True, content: bool = False, logger: logging.Logger | None = None) -> None:
        self.enabled = enabled
        self.content = content
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)

    def write(self, tally: Tally, method: str, path: str) -> None:
        """Log the finished request `tally` describes (probes and scrapes only when they failed)."""
        if (
            not self.enabled
            or (path in _QUIET_PATHS and tally.status < 400)
            or not self._logger.isEnabledFor(logging.INFO)
        ):
            return
        text = _ENCODER.encode(self.line(tally, method, path)).decode()
        # `handle(makeRecord())` rather than `info()`: the caller's frame is never wanted here, and finding it
        # was a fifth of a line's cost.
        self._logger.handle(self._logger.makeRecord(self._logger.name, logging.INFO, "", 0, text, (), None))

    def line(self, tally: Tally, method: str, path: str) -> AccessLine:
        """The line for `tally`."""
        line = AccessLine(
            ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            request_id=tally.request_id,
            method=method,
            path=path,
            status=tally.status,
            duration_ms=_ms(tally.seconds()),
        )
        line.caller, line.team = tally.caller, tally.team
        if not tally.counted:
            return line
        line.route, line.rule, line.model = tally.route, tally.rule, tally.model
        line.stream, line.cache = tally.stream, tally.cache
        line.fallback_from = list(tally.fallback_from) or None
        if tally.usage is not None:
            line.prompt_tokens, line.completion_tokens = tally.usage.prompt_tokens, tally.usage.completion_tokens
        if tally.charge is not None:
            line.cost_usd, line.baseline_cost_usd = _money(tally.cost), _money(tally.charge.baseline)
            line.savings_usd, line.cost_estimated = _money(tally.savings), tally.charge.estimated
        upstream = tally.upstream_total()
        line.upstream_ms = _ms(upstream) if upstream > 0 else None
        if tally.stream and tally.first_byte_at is not None:
            line.ttft_ms = _ms(tally.first_byte_at - tally.started)
        line.retries = len(tally.retries or ())
        line.upstream_errors = [f"{route}:{kind}" for route, kind in tally.upstream_errors or ()] or None
        if (failure := tally.failure) is not None:
            line.failure = Failure(
                status=failure.status, type=failure.type, code=failure.instance_code, message=failure.message
            )
        if self.content:
            self._add_content(line, tally)
        return line

    @staticmethod
    def _add_content(line: AccessLine, tally: Tally) -> None:
        """The request's content and its non-streamed answer's, as its codec reads them (`proxy.wire.content`)."""
        if tally.reader is not None and tally.request is not None:
            content = tally.reader.content(tally.request, tally.answer)
            line.messages, line.input, line.answer = content.messages, content.input, content.answer
