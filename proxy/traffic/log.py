"""`TrafficLog`: takes each finished request at once, and writes them in batches off the request path.

`record()` is all a request pays: a check of the path, a length test, one `Pending` appended to a bounded
deque. Past `traffic.queue` exchanges waiting, a new one is dropped and counted, never waited for. The writer
(one task per worker) wakes when a batch is full or every `FLUSH_EVERY` seconds, reads the batch into
`Exchange`s a slice at a time (decoding, assembling streams, redacting: `proxy.traffic.capture`), and hands it
to the store in one transaction; a store that fails drops that batch (counted) and the next one tries again.
It prunes by age and count every `retention.every` seconds. `open_traffic_log()` opens it for the app's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import Tally
from proxy.auth.store import default_sqlite_path
from proxy.config.sections import TrafficSettings
from proxy.traffic.capture import Pending, exchange_of
from proxy.traffic.record import Exchange
from proxy.traffic.redact import Redaction
from proxy.traffic.store import TrafficStore, open_traffic_store
from proxy.wire.redaction import Redactor

__all__ = ["FLUSH_EVERY", "TrafficLog", "open_traffic_log", "store_url"]

logger = logging.getLogger("turnout.traffic")

SLICE = 16
"""Exchanges read between two yields to the event loop (a few hundred microseconds of work)."""
FLUSH_EVERY = 0.25
"""Seconds the writer waits for a batch to fill before it writes what there is."""
_QUIET_EVERY = 60.0
"""Seconds between two warnings about a failing store."""
_OWN_PATHS = "/v1/turnout/"
"""Turnout's own API under `/v1/` (feedback): not traffic."""


def store_url(settings: TrafficSettings, database_url: str | None) -> str:
    """Where the log goes: `traffic.store`, else the keys database (`database_url`, else the SQLite default)."""
    return settings.store or database_url or f"sqlite:///{default_sqlite_path()}"


def _logged(tally: Tally, path: str) -> bool:
    """A routed or passed-through request, or any other under `/v1/` (a refused one): not probes, not the admin."""
    return tally.counted or (path.startswith("/v1/") and not path.startswith(_OWN_PATHS))


class TrafficLog:
    """The bounded queue of finished requests and the writer that empties it into a `TrafficStore`."""

    def __init__(
        self,
        store: TrafficStore,
        settings: TrafficSettings,
        *,
        recorder: Recorder | None = None,
        secrets: Redactor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._pending: deque[Pending] = deque()
        self._limit = settings.queue
        self._batch = settings.batch
        self._recorder = recorder
        self._clock = clock
        self._wake = asyncio.Event()
        self._dropped = 0
        self._closing = False
        self._warned = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._taken = 0
        """Exchanges queued so far."""
        self._settled = 0
        """Of those, the ones written (or lost to a failing store) so far."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.follow(settings, secrets)

    def follow(self, settings: TrafficSettings, secrets: Redactor | None = None) -> None:
        """Take a reloaded policy's `log`, `redact` and `retention` (the store, queue and batch stay)."""
        self._content = settings.log == "content"
        self._redaction = Redaction(settings.redact, secrets)
        self._retention = settings.retention

    def record(self, tally: Tally, method: str, path: str) -> None:
        """Queue the finished request (or count it dropped when the queue is full): never blocks, never raises."""
        if not _logged(tally, path):
            return
        pending = self._pending
        if len(pending) >= self._limit or self._closing:
            self._dropped += 1
            return
        at = self._clock() - (time.perf_counter() - tally.started)
        content = self._content if tally.log is None else tally.log == "content"
        pending.append(Pending(tally, path, at, content))
        self._taken += 1
        if len(pending) == self._batch:
            self._wake.set()

    async def flush(self, within: float = 5.0) -> None:
        """Wait (up to `within` seconds) until every exchange queued before now has been written."""
        target = self._taken
        if self._settled >= target or self._task is None or self._task.done():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), within)

    def _notify(self) -> None:
        still = []
        for target, waiter in self._waiters:
            if self._settled >= target or self._closing:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((target, waiter))
        self._waiters = still

    @property
    def depth(self) -> int:
        """Exchanges waiting for the writer."""
        return len(self._pending)

    def start(self) -> None:
        """Start the writer (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="traffic-writer")
        self._reporter = loop.create_task(self._report_every(FLUSH_EVERY), name="traffic-metrics")

    async def close(self, grace: float = 10.0) -> None:
        """Take no more, write what waits (for up to `grace` seconds), and close the store."""
        self._closing = True
        self._wake.set()
        if self._reporter is not None:
            self._reporter.cancel()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._report()
        await self.store.close()

    async def _run(self) -> None:
        next_prune = self._clock()
        while True:
            if len(self._pending) < self._batch and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY)
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(self._batch, len(self._pending)))]
                await self._write(batch)
                self._settled += len(batch)
                self._notify()
                self._report()
            self._report()
            if self._closing:
                return
            if self._clock() >= next_prune:
                next_prune = self._clock() + self._retention.every
                await self._prune()

    async def _report_every(self, seconds: float) -> None:
        """The drops and the queue's depth, also while the writer waits on a slow store."""
        while True:
            await asyncio.sleep(seconds)
            self._report()

    async def _write(self, batch: list[Pending]) -> None:
        try:
            exchanges = await self._build(batch)
            await self.store.write(exchanges)
        except Exception as exc:  # noqa: BLE001 - whatever the store raised, the batch is lost and counted
            self._drop(len(batch), "error")
            self._warn(f"could not write {len(batch)} exchanges to {self.store.display_url}: {exc}")
            return
        if self._recorder is not None:
            self._recorder.traffic_written(len(exchanges))
        if len(exchanges) < len(batch):
            self._drop(len(batch) - len(exchanges), "error")

    async def _build(self, batch: list[Pending]) -> list[Exchange]:
        """The batch read into exchanges on the event loop, `SLICE` at a time with a yield between.

        On the loop rather than in a thread: a thread doing this much Python holds the GIL for up to its switch
        interval (5 ms) each time the loop lets go of it for a system call, and the loop then waits that long
        for every `epoll`; in slices, the log costs the server only the work itself.
        """
        redaction, exchanges = self._redaction, []
        for start in range(0, len(batch), SLICE):
            for pending in batch[start : start + SLICE]:
                try:
                    exchanges.append(exchange_of(pending, redaction))
                except Exception:  # a bug reading one request must not lose the batch
                    logger.exception("traffic log: could not read request %s", pending.tally.request_id)
            await asyncio.sleep(0)
        return exchanges

    async def _prune(self) -> None:
        days, max_rows = self._retention.days, self._retention.max_rows
        if days is None and max_rows is None:
            return
        older_than = None if days is None else self._clock() - days * 86400
        try:
            removed = await self.store.prune(older_than=older_than, max_rows=max_rows)
        except Exception as exc:  # noqa: BLE001 - the next prune tries again
            self._warn(f"could not prune {self.store.display_url}: {exc}")
            return
        if removed:
            logger.info("traffic log: pruned %d exchanges", removed)

    def _drop(self, count: int, reason: str) -> None:
        if self._recorder is not None:
            self._recorder.traffic_dropped(count, reason)

    def _report(self) -> None:
        dropped, self._dropped = self._dropped, 0
        if dropped:
            self._drop(dropped, "full")
        if self._recorder is not None:
            self._recorder.traffic_queued(len(self._pending))

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned >= _QUIET_EVERY:
            self._warned = now
            logger.warning("traffic log: %s", message)


@contextlib.asynccontextmanager
async def open_traffic_log(
    settings: TrafficSettings,
    database_url: str | None,
    *,
    recorder: Recorder | None,
    secrets: Redactor | None = None,
    grace: float = 10.0,
) -> AsyncIterator[TrafficLog | None]:
    """The running traffic log, handed every finished request by `recorder` (None when `traffic` is off)."""
    if not settings.enabled:
        yield None
        return
    store = open_traffic_store(store_url(settings, database_url))
    try:
        await store.open()
    except Exception as exc:  # noqa: BLE001 - requests go on; each batch tries the store again
        logger.error("traffic log: %s is not available yet: %s", store.display_url, exc)
    log = TrafficLog(store, settings, recorder=recorder, secrets=secrets)
    log.start()
    logger.info("traffic log: writing to %s (%s)", store.display_url, settings.log)
    if recorder is not None:
        recorder.follow_traffic(log)
    try:
        yield log
    finally:
        if recorder is not None:
            recorder.follow_traffic(None)
        await log.close(grace)
