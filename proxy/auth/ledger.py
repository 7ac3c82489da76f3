"""`Ledger`: the spend of finished requests, queued in memory and written to the database in batches, off the path.

`add` only appends to a bounded queue (never blocks, never raises); a background task writes a batch when
`batch` entries are waiting or every `interval` seconds. A failed write keeps the entries queued and is tried
again at the next interval (logged once per streak of failures); when the queue is full, new entries are
dropped and counted in `dropped`, so an outage costs memory up to `max_queue` entries, no more. `close()`
writes whatever is queued, so a graceful restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque

from proxy.auth.store import Database, DatabaseError, SpendEntry
from proxy.tasks import BackgroundTasks

__all__ = ["Ledger"]

logger = logging.getLogger("turnout.auth")


class Ledger:
    """A write-behind queue of `SpendEntry`s in front of `Database.record_spend`."""

    def __init__(
        self, database: Database, *, batch: int = 200, interval: float = 0.5, max_queue: int = 100_000
    ) -> None:
        self._database = database
        self._batch = batch
        self._interval = interval
        self._max_queue = max_queue
        self._queue: deque[SpendEntry] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._failing = False
        self._stopped: asyncio.Event | None = None
        self.dropped = 0
        """Entries refused because the queue was full (the database was failing for long)."""
        self.written = 0
        """Entries written to the database."""

    @property
    def pending(self) -> int:
        """Entries queued, not yet written."""
        return len(self._queue)

    async def start(self, tasks: BackgroundTasks) -> None:
        """Start the writer in `tasks`."""
        self._stopped = asyncio.Event()
        tasks.spawn(self._run(self._stopped), name="turnout-ledger-writer")

    def add(self, entry: SpendEntry) -> bool:
        """Queue `entry`; False (and `dropped` += 1) when the queue is full, or its time has no zone.

        A naive time is refused here, not when the batch is written: one bad entry must not block the queue.
        """
        if len(self._queue) >= self._max_queue or entry.at.utcoffset() is None:
            self.dropped += 1
            return False
        self._queue.append(entry)
        if len(self._queue) >= self._batch:
            self._wake.set()
        return True

    async def _run(self, stopped: asyncio.Event) -> None:
        try:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
                self._wake.clear()
                if not self._closing:
                    await self.flush()
        finally:
            stopped.set()

    async def flush(self) -> bool:
        """Write everything queued, a batch at a time; False when a write failed (the rest stays queued)."""
        while self._queue:
            entries = list(itertools.islice(self._queue, self._batch))
            try:
                await self._database.record_spend(entries)
            except (DatabaseError, OSError) as exc:
                if not self._failing:
                    logger.warning(
                        "cannot write spend to %s (%s): %d entries kept queued, retried every %s s",
                        self._database.display_url,
                        type(exc).__name__,
                        len(self._queue),
                        self._interval,
                    )
                self._failing = True
                return False
            for _ in entries:  # entries added meanwhile went to the right end: the first len(entries) are these
                self._queue.popleft()
            self.written += len(entries)
            if self._failing:
                logger.info("spend is written to %s again", self._database.display_url)
                self._failing = False
        return True

    async def close(self, *, grace: float = 10.0) -> None:
        """Stop the writer, then write everything still queued, trying again for up to `grace` seconds.

        What still cannot be written then is lost, and logged with how many entries.
        """
        self._closing = True
        self._wake.set()
        if self._stopped is not None:
            await self._stopped.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not await self.flush():
            if loop.time() + self._interval > deadline:
                logger.error(
                    "%d spend entries could not be written to %s", len(self._queue), self._database.display_url
                )
                return
            await asyncio.sleep(self._interval)
