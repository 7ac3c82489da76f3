"""`TrafficMetrics`: what the traffic log wrote, dropped and holds, as Prometheus metrics.

Defined in the registry of `proxy.accounting.metrics.Metrics` (its multiprocess mode included); only the traffic
log's writer sets them, a batch at a time, never a request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["DROP_REASONS", "TrafficMetrics"]

DROP_REASONS = ("full", "error")
"""Why an exchange was not logged: the queue was full, or the store failed to take its batch."""


class TrafficMetrics:
    """`turnout_traffic_written_total`, `turnout_traffic_dropped_total{reason}`, `turnout_traffic_queue_depth`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "turnout_traffic_written", "Exchanges the traffic log wrote to its store.", registry=registry
        )
        self.dropped = Counter(
            "turnout_traffic_dropped",
            "Exchanges the traffic log did not keep: its queue was full, or its store failed (reason).",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self.queue_depth = Gauge(
            "turnout_traffic_queue_depth",
            "Exchanges waiting for the traffic log's writer.",
            multiprocess_mode="livesum",
            registry=registry,
        )
