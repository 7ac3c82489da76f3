"""`Recorder`: the one channel every measurement takes, on its way to the metrics and the access log.

Each part that measures something is handed the app's recorder (built in `proxy.app`, never global)
and calls it with what it measured:

- the middleware, when a request's response has ended: the request's `Tally` (`request`);
- the pipeline, when a shadow copy has finished: the copy's tally (`shadow`);
- the parity pairs and canaries (`proxy.pairing`, `proxy.canaries`): their own metrics, through `parity`;
- the Redis cache backend, for each command that failed or timed out (`cache_failed`);
- the gate (`proxy.gate`), for what it refused (`auth_failed`, `limit_refused`), budgets past their soft share
  (`budget_soft_exceeded`), the limits' Redis lost (`limits_fell_back`) and spend the ledger dropped;
- the traffic log's writer (`proxy.traffic`), for what it wrote, dropped and holds (`traffic_written`, ...);
- the app's resources, for tokens embedded with no request to charge (a policy's examples, at load:
  `embedded`), and for each policy file: the routes it has (`routes_known`), whether it loaded
  (`reloaded`), and its circuit breakers (`follow_breakers`).

What a request measures on its way (the decision, the cache result, the attempts and the breaker
changes they caused, usage, charge, embeddings) is written in its tally and arrives with it, once,
at its end. A breaker also changes with time alone (open turns half-open when its cooldown is over):
`exposition()` reads the running policy's breakers as of the scrape. A new metric is its definition
in `proxy.accounting.metrics` and the code that produces the value; nothing in between changes.

The recorder knows the rest of the server only through what it is given: a tally, an `Embedding`,
route names, and objects with a breaker's `state`. It imports no cache and nothing of the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from proxy.accounting.accesslog import AccessLog
from proxy.accounting.batch import LiveCount
from proxy.accounting.callers import CallerMetrics
from proxy.accounting.metrics import Metrics
from proxy.accounting.parity import ParityMetrics
from proxy.accounting.tally import Embedding, Tally
from proxy.accounting.traffic import TrafficMetrics

__all__ = ["Breaker", "Recorder", "TrafficSink"]


class Breaker(Protocol):
    """What a scrape reads from a route's circuit breaker (`proxy.breaker.CircuitBreaker` is one)."""

    @property
    def state(self) -> str:
        """`closed`, `open` or `half_open`, as of now."""
        ...


class TrafficSink(Protocol):
    """Where each finished request goes to be logged (`proxy.traffic.TrafficLog`): it must take it at once."""

    def record(self, tally: Tally, method: str, path: str) -> None:
        """Take the finished request (never blocking, never raising)."""
        ...


class Recorder:
    """Receives every measurement and hands it to the metrics and, for a finished request, the access log."""

    __slots__ = (
        "_access_log",
        "_breakers",
        "_callers",
        "_metrics",
        "_traffic",
        "_traffic_metrics",
        "in_flight",
        "parity",
    )

    def __init__(self, metrics: Metrics, access_log: AccessLog | None = None, *, metric_keys: int = 50) -> None:
        self._metrics = metrics
        self._access_log = access_log
        self._callers = CallerMetrics(metrics.registry, metrics.batch, top=metric_keys)
        self._breakers: Mapping[str, Breaker] = {}
        self._traffic: TrafficSink | None = None
        self._traffic_metrics = TrafficMetrics(metrics.registry)
        self.in_flight: LiveCount = metrics.in_flight
        """Requests being answered now: the middleware counts each in and out."""
        self.parity = ParityMetrics(metrics.registry)
        """Pairs, the parity gate, canaries and evaluation spend (`proxy.pairing`, `proxy.canaries`)."""

    def request(self, tally: Tally, method: str, path: str) -> None:
        """A request's response has ended (or its client left): count a routed or passed-through one, log every one."""
        if tally.counted:
            self._metrics.record(tally)
        if tally.keyed:
            self._callers.record(tally)
        if self._access_log is not None:
            self._access_log.write(tally, method, path)
        if self._traffic is not None:
            self._traffic.record(tally, method, path)

    def follow_traffic(self, sink: TrafficSink | None) -> None:
        """From now on, hand each finished request to `sink` too (None: no longer)."""
        self._traffic = sink

    def traffic_written(self, count: int) -> None:
        """The traffic log wrote `count` exchanges."""
        self._traffic_metrics.written.inc(count)

    def traffic_dropped(self, count: int, reason: str) -> None:
        """The traffic log dropped `count` exchanges: its queue was `full`, or its store failed (`error`)."""
        self._traffic_metrics.dropped.labels(reason).inc(count)

    def traffic_queued(self, depth: int) -> None:
        """Exchanges waiting for the traffic log's writer now."""
        self._traffic_metrics.queue_depth.set(depth)

    def shadow(self, tally: Tally) -> None:
        """A shadow copy has finished: its tokens, cost and errors count on its route; it is no request."""
        self._metrics.record(tally)

    def auth_failed(self, reason: str) -> None:
        """The gate refused a request: `missing`, `invalid` key, `throttled` address, `forbidden` route or model."""
        self._callers.auth_failed(reason)

    def limit_refused(self, scope: str, name: str, limit: str) -> None:
        """A key's or team's (`scope`) limit refused a request: `rpm`, `tpm`, `budget` or `unavailable`."""
        self._callers.refused(scope, name, limit)

    def budget_soft_exceeded(self, scope: str, name: str) -> None:
        """A request was admitted past the soft share of its key's or team's budget."""
        self._callers.soft_exceeded(scope, name)

    def limits_fell_back(self) -> None:
        """The limits' Redis is unreachable: this process counts on its own."""
        self._callers.limits_fell_back()

    def ledger_dropped(self) -> None:
        """A spend entry was dropped: the ledger's queue is full."""
        self._callers.ledger_dropped()

    def cache_failed(self) -> None:
        """A cache backend command failed or timed out (and was answered as a miss)."""
        self._metrics.cache_failed()

    def embedded(self, embedding: Embedding) -> None:
        """Embedding tokens no request pays for (a policy's examples, embedded at load)."""
        self._metrics.embedded(embedding)

    def routes_known(self, routes: Iterable[str]) -> None:
        """A policy file's routes: their rare counters start at zero (see `Metrics.routes_known`)."""
        self._metrics.routes_known(routes)

    def prices_in_force(self, version: str) -> None:
        """The price data a policy file's routes are priced by (`PriceTable.version`)."""
        self._metrics.spend.prices_in_force(version)

    def reloaded(self, *, ok: bool) -> None:
        """A policy reload, applied (`ok`) or refused (the running policy stays)."""
        self._metrics.reloaded(ok=ok)

    def follow_breakers(self, breakers: Mapping[str, Breaker]) -> None:
        """The running policy's breakers, by route: from now on, each scrape shows their states as of then."""
        self._breakers = breakers

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format, the followed breakers' states read first (from any thread)."""
        self._metrics.circuit_states((route, breaker.state) for route, breaker in self._breakers.items())
        return self._metrics.exposition()
