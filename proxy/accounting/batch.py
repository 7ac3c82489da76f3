"""`Batch`: metric values added up in plain Python numbers per request, written to prometheus_client in batches.

prometheus_client takes a lock for every `inc()` and `observe()`, and in its multiprocess mode
(`turnout serve --workers N`) also writes a memory-mapped file, about 2 µs each, some 14 a request. On
the request path Turnout only adds to the attributes of a `PendingCount`, `PendingHistogram` or
`LiveCount`; `Batch.flush()` moves what was added into the real metric children, one write per
changed value. `Metrics` flushes before it serves a scrape, at close, and, with several workers, every
`FLUSH_SECONDS` from the event loop, so that a scrape answered by another worker is at most that far
behind for this one. Nothing is lost or counted twice: a flush takes each amount and zeroes it under
one lock, which the request path holds while it adds.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = [
    "FLUSH_SECONDS",
    "Batch",
    "Children",
    "LiveCount",
    "PendingCount",
    "PendingHistogram",
    "WithoutCreated",
]

Labels = tuple[str, ...]

FLUSH_SECONDS = 0.5
"""With several workers: how often each worker writes what it counted where the others' scrapes read it."""


class PendingCount:
    """A counter child's increments since the last flush."""

    __slots__ = ("_child", "amount")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self.amount = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (never negative); the caller holds the batch's lock."""
        self.amount += amount

    def take(self) -> float:
        """What was added since the last take, and start again from zero (under the lock)."""
        amount, self.amount = self.amount, 0.0
        return amount

    def write(self, taken: Any) -> None:
        """Add what `take()` returned to the real child."""
        if taken:
            self._child.inc(taken)


class PendingHistogram:
    """A histogram child's observations since the last flush: a count per bucket and their sum."""

    __slots__ = ("_bounds", "_child", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        # The child's own upper bounds, +Inf last; prometheus_client counts a value in the first bucket
        # whose bound is >= it, which is what `bisect_left` finds.
        self._bounds: Sequence[float] = child._upper_bounds  # private: no public accessor
        self.counts = [0] * len(self._bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        """Count one observation; the caller holds the batch's lock."""
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.total += amount

    def take(self) -> tuple[list[int], float] | None:
        """The counts and sum since the last take (None: nothing observed), and start again (under the lock)."""
        counts = self.counts
        if not any(counts):
            return None
        taken = counts, self.total
        self.counts, self.total = [0] * len(counts), 0.0
        return taken

    def write(self, taken: Any) -> None:
        """Add what `take()` returned to the real child's buckets and sum."""
        if taken is None:
            return
        counts, total = taken
        buckets = self._child._buckets  # private: observe() counts one value a call
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
        self._child._sum.inc(total)


class LiveCount:
    """A gauge that goes up and down on the event loop (requests in flight); a flush sets the real one."""

    __slots__ = ("_gauge", "_written", "value")

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self.value = 0
        self._written: int | None = None

    def inc(self) -> None:
        """One more."""
        self.value += 1

    def dec(self) -> None:
        """One fewer."""
        self.value -= 1

    def take(self) -> int | None:
        """The value now when it changed since the last write (None: unchanged)."""
        value = self.value
        return None if value == self._written else value

    def write(self, taken: Any) -> None:
        """Set the real gauge to what `take()` returned."""
        if taken is not None:
            self._gauge.set(taken)
            self._written = taken


Pending = PendingCount | PendingHistogram | LiveCount


class Batch:
    """Every pending value of one `Metrics`, the lock that guards them, and the flush timer."""

    __slots__ = ("_flushing", "_pending", "_timer", "lock")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        """Held while values are added or registered, and by `flush()` while it takes (scrapes run in a thread)."""
        self._flushing = threading.Lock()
        """One flush at a time, so that a gauge's older value is never written after a newer one."""
        self._pending: list[Pending] = []
        self._timer: asyncio.TimerHandle | None = None

    def count(self, child: Counter) -> PendingCount:
        """A pending counter for `child`, flushed with the others."""
        pending = PendingCount(child)
        with self.lock:
            self._pending.append(pending)
        return pending

    def histogram(self, child: Histogram) -> PendingHistogram:
        """A pending histogram for `child`, flushed with the others."""
        pending = PendingHistogram(child)
        with self.lock:
            self._pending.append(pending)
        return pending

    def live(self, gauge: Gauge) -> LiveCount:
        """A live count for `gauge`, flushed with the others."""
        pending = LiveCount(gauge)
        with self.lock:
            self._pending.append(pending)
        return pending

    def flush(self, *, wait: bool = True) -> None:
        """Write everything added since the last flush to the real metrics (from any thread).

        With `wait=False`, a flush already running elsewhere is left to do the work.
        """
        if not self._flushing.acquire(blocking=wait):
            return
        try:
            with self.lock:
                taken = [(pending, pending.take()) for pending in self._pending]
            # The writes happen outside `lock`: in multiprocess mode they take ~2 µs each, and requests
            # must not wait on a scrape's flush. What was taken is already zero in the pending values.
            for pending, amounts in taken:
                pending.write(amounts)
        finally:
            self._flushing.release()

    def flush_every(self, seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        """Flush every `seconds` on `loop` until `stop()` (a timer, not a task: nothing to await)."""

        def tick() -> None:
            self._timer = loop.call_later(seconds, tick)
            self.flush(wait=False)

        self.stop()
        self._timer = loop.call_later(seconds, tick)

    def stop(self) -> None:
        """Stop the timer, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class WithoutCreated:
    """A collector without `_created` series (twice the series, no use); prometheus_client's switch is process-wide."""

    __slots__ = ("_source",)

    def __init__(self, source: Collector) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        """The source's metrics, each without its `_created` samples."""
        for metric in self._source.collect():
            created = metric.name + "_created"
            metric.samples = [sample for sample in metric.samples if sample.name != created]
            yield metric


class Children:
    """A counter's pending children by label values: a dict lookup per update instead of `labels()`'s work."""

    __slots__ = ("_batch", "_by_labels", "_metric")

    def __init__(self, metric: Counter, batch: Batch) -> None:
        self._metric, self._batch = metric, batch
        self._by_labels: dict[Labels, PendingCount] = {}

    def __getitem__(self, labels: Labels) -> PendingCount:
        child = self._by_labels.get(labels)
        if child is None:
            child = self._by_labels[labels] = self._batch.count(self._metric.labels(*labels))
        return child
