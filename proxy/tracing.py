"""Traces: a span per request and per upstream attempt, by OpenTelemetry's GenAI conventions, exported over OTLP.

Off (no endpoint configured: `proxy.config.tracing`), nothing here runs: the middleware gets no `Tracing` and the
upstream sessions no trace hooks, so a request pays for two `is None` tests. On:

- the middleware starts each request's SERVER span, continuing the client's W3C `traceparent` (and `tracestate`);
- each HTTP request to an upstream (an attempt: a retry or a fallback is one more) is a CLIENT span under it,
  named `{gen_ai.operation.name} {gen_ai.request.model}`, started by aiohttp's own hooks on the upstream sessions
  (`aiohttp.TraceConfig`), and its `traceparent` replaces the client's on the way upstream;
- a retry and a fallback are events on the request span, at the time the next attempt starts;
- when the request ends, what it became (route, rule, cache, the model that answered, its usage, its status) is read
  off its `Tally`; the answering attempt gets the model and the usage too, and a stream's lasts until its end.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
import msgspec
from litestar.types import HTTPScope
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from proxy._version import __version__
from proxy.accounting.tally import Tally
from proxy.config.tracing import TracingSettings

__all__ = ["PROVIDER", "RequestTrace", "Tracing"]

PROVIDER = "openai"
"""`gen_ai.provider.name` of every upstream: each speaks OpenAI's API (`gen_ai.system` too, for older backends)."""
_OPERATIONS = {"chat": "chat", "responses": "chat", "completions": "text_completion", "embeddings": "embeddings"}
"""An endpoint kind's `gen_ai.operation.name`."""
_PATHS = (("/chat/completions", "chat"), ("/completions", "text_completion"), ("/responses", "chat"))
_PROPAGATOR = TraceContextTextMapPropagator()
_CARRIED = (b"traceparent", b"tracestate")
_UNTRACED = frozenset({"/metrics", "/healthz", "/readyz"})


class _Sampling(msgspec.Struct):
    """The request parameters the GenAI conventions name, read from an attempt's JSON body."""

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None


def _ns(perf: float) -> int:
    """A `time.perf_counter()` reading as the epoch nanoseconds spans are timed in."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def _operation(path: str) -> str | None:
    for suffix, operation in _PATHS:
        if path.endswith(suffix):
            return operation
    return "embeddings" if path.endswith("/embeddings") else None


class _Attempt:
    """One request to an upstream: its span, and whether and when it answered 2xx (its end may wait for the tally)."""

    __slots__ = ("answered_at", "operation", "read_body", "shadow", "span")

    def __init__(self, span: Span, operation: str | None, shadow: bool) -> None:
        self.span, self.operation, self.shadow = span, operation, shadow
        self.answered_at: float | None = None
        self.read_body = False


class RequestTrace:
    """One request's span, and its attempts' spans while the request runs."""

    __slots__ = ("_errors_seen", "_pending", "_route", "_token", "_var", "ended", "span", "tally")

    def __init__(
        self,
        span: Span,
        tally: Tally,
        var: contextvars.ContextVar[RequestTrace | None],
    ) -> None:
        self.span, self.tally, self._var = span, tally, var
        self._token = var.set(self)
        self._pending: list[_Attempt] = []
        """Attempts that answered 2xx and are not ended yet: the answering one gets the tally's model and usage."""
        self._errors_seen = 0
        self._route: str | None = None
        self.ended = False

    def attempt(self, tracer: Tracer, method: str, url: URL, headers: Any) -> _Attempt:
        """Start an attempt's span (a retry or a fallback is noted first) and send its context upstream."""
        tally = self.tally
        shadow = str(headers.get("x-request-id", "")).endswith("-shadow")
        if not shadow:
            self._note_failures(tally)
        operation = _operation(url.path)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": url.host or "",
            "server.port": url.port or 0,
            "url.path": url.path,
        }
        if operation is not None:
            attributes |= {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.system": PROVIDER,
            }
        if tally.route is not None and not shadow:
            attributes["turnout.route"] = tally.route
        if shadow:
            attributes["turnout.shadow"] = True
        context = set_span_in_context(self.span)
        span = tracer.start_span(operation or method, context=context, kind=SpanKind.CLIENT, attributes=attributes)
        _PROPAGATOR.inject(headers, context=set_span_in_context(span))
        return _Attempt(span, operation, shadow)

    def _note_failures(self, tally: Tally) -> None:
        """A new attempt after failed ones is a retry (same route) or a fallback (another): an event each."""
        errors = tally.upstream_errors or []
        if len(errors) > self._errors_seen:
            kind = errors[-1][1]
            for pending in self._pending:  # answered 2xx, then failed (an error as the stream's first event)
                pending.span.set_attribute("error.type", kind)
                pending.span.set_status(Status(StatusCode.ERROR))
            route = tally.route or ""
            if self._route is not None and route != self._route:
                event = {"turnout.fallback_from": list(tally.fallback_from), "turnout.route": route, "error.type": kind}
                self.span.add_event("turnout.fallback", event)
            elif self._route is not None:
                self.span.add_event("turnout.retry", {"turnout.route": route, "error.type": kind})
        self._errors_seen = len(errors)
        self._route = tally.route
        self._settle(None)

    def answered(self, attempt: _Attempt, status: int) -> None:
        """An attempt's response headers came: a 2xx one waits for the request's end, any other ends now."""
        attempt.span.set_attribute("http.response.status_code", status)
        if status >= 300 or self.ended or attempt.shadow:
            if status >= 300:
                attempt.span.set_attribute("error.type", str(status))
                attempt.span.set_status(Status(StatusCode.ERROR))
            attempt.span.end()
            return
        attempt.answered_at = time.perf_counter()
        self._pending.append(attempt)

    def _settle(self, tally: Tally | None) -> None:
        """End the pending attempts; with the finished `tally`, the last is the answer: it gets model and usage."""
        pending, self._pending = self._pending, []
        for index, attempt in enumerate(pending):
            end = attempt.answered_at
            if tally is not None and index == len(pending) - 1:
                _answer_attributes(attempt.span, tally)
                end = tally.ended_at if tally.stream else (tally.answered_at or end)
            attempt.span.end(end_time=_ns(end) if end is not None else None)

    def end(self, method: str, path: str) -> None:
        """The request has ended: its span gets what the tally says, and ends with its attempts."""
        self.ended = True
        self._var.reset(self._token)
        tally, span = self.tally, self.span
        self._settle(tally)
        if tally.routed:
            span.update_name(f"{method} {path}")
            span.set_attribute("http.route", path)
        status = tally.status
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        _request_attributes(span, tally)
        span.end(end_time=_ns(tally.ended_at) if tally.ended_at is not None else None)


def _answer_attributes(span: Span, tally: Tally) -> None:
    """The model that answered and its usage, on the span of the attempt (or request) that answered."""
    if tally.model is not None:
        span.set_attribute("gen_ai.response.model", tally.model)
    if tally.usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", tally.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", tally.usage.completion_tokens)
    if any(kind == "midstream" for _, kind in tally.upstream_errors or ()):
        span.set_attribute("error.type", "midstream")
        span.set_status(Status(StatusCode.ERROR))


def _request_attributes(span: Span, tally: Tally) -> None:
    operation = _OPERATIONS.get(tally.endpoint)
    if operation is not None:
        span.set_attribute("gen_ai.operation.name", operation)
        span.set_attribute("gen_ai.provider.name", PROVIDER)
        model = getattr(tally.request.view, "model", None) if tally.request is not None else None
        if isinstance(model, str):
            span.set_attribute("gen_ai.request.model", model)
    attributes: Mapping[str, Any] = {
        "turnout.route": tally.route,
        "turnout.rule": tally.rule,
        "turnout.endpoint": tally.endpoint or None,
        "turnout.fallback_from": list(tally.fallback_from) or None,
        "turnout.retries": len(tally.retries) if tally.retries else None,
        "turnout.cost_usd": str(tally.cost) if tally.cost is not None else None,
    }
    for name, value in attributes.items():
        if value is not None:
            span.set_attribute(name, value)
    if tally.routed:
        span.set_attribute("turnout.cache", tally.cache)
        span.set_attribute("turnout.stream", tally.stream)
    _answer_attributes(span, tally)


class Tracing:
    """The tracer provider and its OTLP exporter (one per app), the request spans, and the upstream sessions' hooks."""

    def __init__(self, settings: TracingSettings, *, exporter: SpanExporter | None = None) -> None:
        """Export to `settings.traces_url` (or to `exporter`, given one) in batches, from a thread of the SDK's."""
        if exporter is None:
            if settings.traces_url is None:
                raise ValueError("tracing is off: no OTLP endpoint")
            exporter = OTLPSpanExporter(endpoint=settings.traces_url, timeout=10)
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self._provider = TracerProvider(resource=resource, sampler=sampler)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("turnout", __version__)
        self._current: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar("turnout_trace")
        self.trace_config = aiohttp.TraceConfig()
        """The hooks every upstream session gets (`routes.upstream.new_session`): one span per attempt."""
        self.trace_config.on_request_start.append(self._on_start)
        self.trace_config.on_request_chunk_sent.append(self._on_chunk_sent)
        self.trace_config.on_request_end.append(self._on_end)
        self.trace_config.on_request_exception.append(self._on_exception)

    def begin(self, scope: HTTPScope, tally: Tally) -> RequestTrace | None:
        """Start the request's span (None for the probes and `/metrics`), under the client's `traceparent`."""
        path: str = scope["path"]
        if path in _UNTRACED:
            return None
        carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in _CARRIED}
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        method: str = scope["method"]
        attributes = {"http.request.method": method, "url.path": path, "turnout.request_id": tally.request_id}
        span = self._tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        return RequestTrace(span, tally, self._current)

    def close(self) -> None:
        """Export what is left and stop the exporter's thread (blocks up to the exporter's timeout)."""
        self._provider.shutdown()

    async def _on_start(self, _: object, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
        request = self._current.get(None)
        ctx.request = request if request is not None and not request.ended else None
        ctx.attempt = (
            None
            if ctx.request is None
            else ctx.request.attempt(self._tracer, params.method, params.url, params.headers)
        )

    async def _on_chunk_sent(
        self, _: object, ctx: SimpleNamespace, params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        attempt: _Attempt | None = ctx.attempt
        if attempt is None or attempt.read_body or bytes(params.chunk[:1]) != b"{":
            return
        attempt.read_body = True  # the first chunk of a JSON body is the whole of it (an upload's is not: skipped)
        try:
            sampling = msgspec.json.decode(params.chunk, type=_Sampling)
        except msgspec.DecodeError:
            return
        span = attempt.span
        if sampling.model is not None:
            span.set_attribute("gen_ai.request.model", sampling.model)
            if attempt.operation is not None:
                span.update_name(f"{attempt.operation} {sampling.model}")
        limit = sampling.max_tokens or sampling.max_completion_tokens or sampling.max_output_tokens
        for name, value in (("max_tokens", limit), ("temperature", sampling.temperature), ("top_p", sampling.top_p)):
            if value is not None:
                span.set_attribute(f"gen_ai.request.{name}", value)

    async def _on_end(self, _: object, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        if ctx.attempt is not None:
            ctx.request.answered(ctx.attempt, params.response.status)

    async def _on_exception(self, _: object, ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams) -> None:
        attempt: _Attempt | None = ctx.attempt
        if attempt is not None:
            attempt.span.set_attribute("error.type", type(params.exception).__qualname__)
            attempt.span.set_status(Status(StatusCode.ERROR))
            attempt.span.end()
