"""`Metrics`: owns its CollectorRegistry; every metric Turnout exports is defined here, once.

Labels come only from a fixed vocabulary: route and rule names from the policy file, a model name from
the price table or the routes (anything else is `other`), the status class, the cache result, the endpoint
(a codec's kind, or an API family from a fixed list) and a few fixed kinds. Never a caller's value, nor a key.

With several worker processes (`turnout serve --workers N`), prometheus_client's multiprocess mode
keeps each worker's values in files under one directory, and `/metrics` merges them, so every
worker's counts appear once whichever worker answers the scrape. A request only adds to plain numbers
(`proxy.accounting.batch`); they reach prometheus_client when this worker serves a scrape, when it stops,
and with several workers every `FLUSH_SECONDS`, so that another worker's scrape is at most that behind.
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Iterable, Mapping
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from proxy._version import __version__
from proxy.accounting.batch import FLUSH_SECONDS, Batch, Labels, PendingCount, PendingHistogram
from proxy.accounting.batch import Children as _Children
from proxy.accounting.batch import WithoutCreated as _WithoutCreated
from proxy.accounting.spend import Spend
from proxy.accounting.tally import Embedding, Tally

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "OVERHEAD_BUCKETS", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
"""Seconds: from a 20 ms cache hit to a 60 s generation."""
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Seconds: Turnout's own time is a fraction of a millisecond when all is well."""
CIRCUIT_VALUES: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
NONE = "none"
"""The label value when a request never got that far (no decision, no answer)."""


class _Series:
    """The pending values a kind of request adds to, found with one dict lookup; those only some need, on first use."""

    __slots__ = (
        "_batch",
        "_first_token",
        "_labels",
        "_metrics",
        "_overspend",
        "_savings",
        "_upstream",
        "baseline",
        "cache_lookups",
        "completion_tokens",
        "cost",
        "duration",
        "overhead",
        "prompt_tokens",
        "requests",
    )

    def __init__(self, metrics: Metrics, labels: Labels) -> None:
        route, rule, model, status, cache, endpoint = labels
        self._metrics, self._labels = metrics, (route, model, cache)
        self._batch = batch = metrics.batch
        self.requests = batch.count(metrics.requests.labels(route, rule, model, status, cache, endpoint))
        self.duration = batch.histogram(metrics.duration.labels(route, cache, endpoint))
        self.overhead = batch.histogram(metrics.overhead.labels(route))
        self.cache_lookups = None if cache == "bypass" else batch.count(metrics.cache_lookups.labels(route, cache))
        answered = model != NONE  # a model label comes with the usage
        self.prompt_tokens = metrics.tokens_of[(route, model, "prompt")] if answered else None
        self.completion_tokens = metrics.tokens_of[(route, model, "completion")] if answered else None
        self.cost = metrics.cost_of[(route, model)] if answered else None
        self.baseline = batch.count(metrics.baseline.labels(route, model)) if answered else None
        self._first_token: PendingHistogram | None = None
        self._upstream: PendingHistogram | None = None
        self._savings: PendingCount | None = None
        self._overspend: PendingCount | None = None

    def first_token(self) -> PendingHistogram:
        if self._first_token is None:
            route, _, cache = self._labels
            self._first_token = self._batch.histogram(self._metrics.first_token.labels(route, cache))
        return self._first_token

    def upstream(self) -> PendingHistogram:
        if self._upstream is None:
            self._upstream = self._batch.histogram(self._metrics.upstream.labels(self._labels[0]))
        return self._upstream

    def savings(self) -> PendingCount:
        if self._savings is None:
            self._savings = self._batch.count(self._metrics.savings.labels(*self._labels[:2]))
        return self._savings

    def overspend(self) -> PendingCount:
        if self._overspend is None:
            self._overspend = self._batch.count(self._metrics.overspend.labels(*self._labels[:2]))
        return self._overspend


class Metrics:
    """Every metric, in a registry of its own; `record(tally)` once per request, `exposition()` per scrape."""

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        """Where the workers' values live when several share a port (None: this process only)."""
        self.registry = registry = CollectorRegistry()
        self._define_traffic(registry)
        self._define_money(registry)
        self._define_health(registry)
        self.batch = batch = Batch()
        """What requests add up between flushes (see `proxy.accounting.batch`)."""
        self.in_flight = batch.live(self.in_flight_gauge)
        self._series: dict[Labels, _Series] = {}
        self.tokens_of, self.cost_of = _Children(self.tokens, batch), _Children(self.cost, batch)
        self._fallbacks, self._retries = _Children(self.fallbacks, batch), _Children(self.retries, batch)
        self._upstream_errors = _Children(self.upstream_errors, batch)
        self._embedding_tokens = _Children(self.embedding_tokens, batch)
        self._embedding_cost = _Children(self.embedding_cost, batch)
        self.spend = Spend(registry, batch)
        self._overspend_of = _Children(self.overspend, batch)

    def _define_traffic(self, registry: CollectorRegistry) -> None:
        """Requests and their timing."""
        route, rule, model = "route", "rule", "model"
        self.requests = Counter(
            "turnout_requests",
            "Requests answered: routed (chat, responses, embeddings, completions) and passed through.",
            [route, rule, model, "status_class", "cache", "endpoint"],
            registry=registry,
        )
        self.duration = Histogram(
            "turnout_request_duration_seconds",
            "From the request's arrival to the last byte of its response.",
            [route, "cache", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            "turnout_time_to_first_token_seconds",
            "Streams: from the request's arrival to the first event sent to the client.",
            [route, "cache"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream = Histogram(
            "turnout_upstream_duration_seconds",
            "Time spent waiting on upstreams (every attempt; a stream until its last event).",
            [route],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "turnout_overhead_seconds",
            "Turnout's own time: total minus upstream (retry backoff included).",
            [route],
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )

    def _define_money(self, registry: CollectorRegistry) -> None:
        """Tokens, cost, baseline, savings."""
        route, model = "route", "model"
        self.tokens = Counter(
            "turnout_tokens", "Tokens the upstream reported, by kind.", [route, model, "kind"], registry=registry
        )
        self.cost = Counter(
            "turnout_cost_usd",
            "What the answers, their embeddings and shadows cost, in USD.",
            [route, model],
            registry=registry,
        )
        self.baseline = Counter(
            "turnout_baseline_cost_usd",
            "What the clients' requests would have cost on the baseline route, in USD (cache hits included).",
            [route, model],
            registry=registry,
        )
        self.savings = Counter(
            "turnout_savings_usd",
            "Baseline cost minus actual cost, in USD, over the answers that cost less than the baseline.",
            [route, model],
            registry=registry,
        )
        self.overspend = Counter(
            "turnout_overspend_usd",
            "Actual cost minus baseline cost, in USD, over the answers that cost more than the baseline.",
            [route, model],
            registry=registry,
        )

    def _define_health(self, registry: CollectorRegistry) -> None:
        """Cache, fallbacks, retries, errors, embeddings, breakers, in flight, reloads, build."""
        route, model = "route", "model"
        self.cache_lookups = Counter(
            "turnout_cache_lookups", "Response cache lookups, by result.", [route, "result"], registry=registry
        )
        self.cache_errors = Counter(
            "turnout_cache_errors",
            "Redis cache commands that failed or timed out (each one a miss).",
            registry=registry,
        )
        self.fallbacks = Counter(
            "turnout_fallbacks", "Requests that left a failing route for its fallback.", [route], registry=registry
        )
        self.retries = Counter("turnout_retries", "Retries on the same route.", [route], registry=registry)
        self.rag_no_context = Counter(
            "turnout_rag_no_context",
            "RAG answers with no passage above the floor (no_context).",
            [route],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "turnout_upstream_errors", "Failed upstream attempts, by kind.", [route, "kind"], registry=registry
        )
        self.embedding_tokens = Counter(
            "turnout_embedding_tokens",
            "Tokens embedded for requests (RAG, semantic rules).",
            [model],
            registry=registry,
        )
        self.embedding_cost = Counter(
            "turnout_embedding_cost_usd", "What the embeddings cost, in USD.", [model], registry=registry
        )
        self.circuit = Gauge(
            "turnout_circuit_state",
            "Circuit breaker state per route: 0 closed, 1 half-open, 2 open (the worst of the workers).",
            [route],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.in_flight_gauge = Gauge(
            "turnout_requests_in_flight",
            "Requests being answered now (the scrape excluded).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.reloads = Counter(
            "turnout_policy_reloads", "Policy file reloads, by result.", ["result"], registry=registry
        )
        build = Gauge(
            "turnout_build_info",
            "Always 1; the labels say which Turnout runs.",
            ["version", "python"],
            multiprocess_mode="max",
            registry=registry,
        )
        build.labels(__version__, platform.python_version()).set(1)

    def record(self, tally: Tally) -> None:
        """Count one finished request (`tally.ended_at` set), routed or passed through, or a shadow copy's spend."""
        with self.batch.lock:
            if tally.shadow:
                self._record_shadow(tally)
            else:
                self._record(tally)

    def _record(self, tally: Tally) -> None:
        key = (
            tally.route or NONE,
            tally.rule or NONE,
            tally.model_label or NONE,
            _STATUS_CLASSES.get(tally.status // 100, "5xx"),
            tally.cache,
            tally.endpoint or NONE,
        )
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, key)
        series.requests.inc()
        total = tally.seconds()
        series.duration.observe(total)
        if tally.stream and tally.first_byte_at is not None:
            series.first_token().observe(tally.first_byte_at - tally.started)
        upstream = tally.upstream_total()
        if upstream > 0:
            series.upstream().observe(upstream)
        series.overhead.observe(max(total - upstream, 0.0))
        if series.cache_lookups is not None:
            series.cache_lookups.inc()
        usage = tally.usage
        if usage is not None and series.prompt_tokens is not None and series.completion_tokens is not None:
            series.prompt_tokens.inc(usage.prompt_tokens)
            series.completion_tokens.inc(usage.completion_tokens)
        charge, cost = tally.charge, tally.cost
        if charge is not None and cost is not None and series.cost is not None and series.baseline is not None:
            self._money(series, tally.route or NONE, tally.model_label or NONE, cost, charge.baseline, charge.estimated)
        if tally.fallback_from or tally.retries or tally.upstream_errors or tally.embeddings or tally.circuits:
            self._record_rare(tally)
        if tally.rag == "no-context":
            self.rag_no_context.labels(tally.route or NONE).inc()

    def _money(
        self, series: _Series, route: str, model: str, cost: Decimal, baseline: Decimal, estimated: bool
    ) -> None:
        """Cost, baseline and their difference (as savings or overspend): `savings - overspend = baseline - cost`."""
        if series.cost is not None and series.baseline is not None:
            series.cost.inc(float(cost))
            series.baseline.inc(float(baseline))
        saved = float(baseline - cost)  # the difference in Decimal, then a float: the sums stay consistent
        if saved > 0:
            series.savings().inc(saved)
        elif saved < 0:
            series.overspend().inc(-saved)
        if estimated:
            self.spend.estimated[(route, model)].inc(float(cost))

    def _record_shadow(self, tally: Tally) -> None:
        """A shadow copy: its tokens and cost on its route, spend with no baseline (overspend); not a request."""
        route, model = tally.route or NONE, tally.model_label or NONE
        if tally.usage is not None:
            self.tokens_of[(route, model, "prompt")].inc(tally.usage.prompt_tokens)
            self.tokens_of[(route, model, "completion")].inc(tally.usage.completion_tokens)
        cost = tally.cost
        if tally.charge is not None and cost is not None:
            self.cost_of[(route, model)].inc(float(cost))
            if cost > 0:
                self._overspend_of[(route, model)].inc(float(cost))
        for labels in tally.upstream_errors or ():
            self._upstream_errors[labels].inc()

    def _record_rare(self, tally: Tally) -> None:
        """What only some requests have: fallbacks, retries, upstream errors, embeddings, breaker changes."""
        for route in tally.fallback_from:
            self._fallbacks[(route,)].inc()
        for route in tally.retries or ():
            self._retries[(route,)].inc()
        for labels in tally.upstream_errors or ():
            self._upstream_errors[labels].inc()
        for embedding in tally.embeddings or ():
            self._embedding_tokens[(embedding.model,)].inc(embedding.tokens)
            if embedding.cost is not None:
                self._embedding_cost[(embedding.model,)].inc(float(embedding.cost))
        self.circuit_states(tally.circuits or ())

    def circuit_states(self, states: Iterable[tuple[str, str]]) -> None:
        """Set each route's breaker state (`closed`, `half_open`, `open`)."""
        for route, state in states:
            self.circuit.labels(route).set(CIRCUIT_VALUES[state])

    def routes_known(self, routes: Iterable[str]) -> None:
        """Start each route's rare counters at zero, so that `rate()` sees their first increment too.

        A counter born at 1 looks to Prometheus like one that was always 1: the first cache hit, fallback
        or retry of a route would never show in a rate (Prometheus' "initialise the labels you know").
        """
        for route in routes:
            for result in ("hit", "miss"):
                self.cache_lookups.labels(route, result)
            self.fallbacks.labels(route)
            self.retries.labels(route)

    def embedded(self, embedding: Embedding) -> None:
        """Embedding tokens no request pays for (a policy's examples): spend with no baseline, on route `none`."""
        with self.batch.lock:
            self._embedding_tokens[(embedding.model,)].inc(embedding.tokens)
            if embedding.cost is not None:
                self._embedding_cost[(embedding.model,)].inc(float(embedding.cost))
                self.cost_of[(NONE, embedding.model)].inc(float(embedding.cost))
                if embedding.cost > 0:
                    self._overspend_of[(NONE, embedding.model)].inc(float(embedding.cost))

    def cache_failed(self) -> None:
        """Count a Redis cache command that failed or timed out."""
        self.cache_errors.inc()

    def reloaded(self, *, ok: bool) -> None:
        """Count a policy reload, successful or refused."""
        self.reloads.labels("success" if ok else "failure").inc()

    def start_flushing(self, loop: asyncio.AbstractEventLoop) -> None:
        """With several workers, write this one's values for the others' scrapes every `FLUSH_SECONDS`."""
        if self.multiprocess_dir is not None:
            self.batch.flush_every(FLUSH_SECONDS, loop)

    def flush(self) -> None:
        """Write what requests added since the last flush where `exposition()` reads it."""
        self.batch.flush()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (every worker's, in multiprocess mode); flushes first."""
        self.batch.flush()
        if self.multiprocess_dir is None:
            return generate_latest(_WithoutCreated(self.registry))
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(_WithoutCreated(merged))

    def close(self) -> None:
        """This worker is stopping: its last values are written, its live gauges (in flight, circuits) leave."""
        self.batch.stop()
        self.batch.flush()
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]  # untyped upstream
