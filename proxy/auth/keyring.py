"""`KeyRing`: the hot path's view of the keys, in memory, kept fresh by polling the database's keys version.

`find` hashes the presented key and looks its digest up in a dict: no I/O, a few microseconds. The dict
holds only keys that work (revoked ones are left out at load; expiry is checked per call, against the wall
clock), so a key revoked by any process is gone here within `refresh` seconds: each poll reads one number
(`keys_version`) and reloads the keys only when it moved. A poll that fails keeps the keys last loaded
(a database outage must not lock every caller out), logged once per streak of failures, never with a key.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.auth.keys import KeyRecord, digest_of
from proxy.auth.store import Database, DatabaseError
from proxy.tasks import BackgroundTasks

__all__ = ["KeyRing"]

logger = logging.getLogger("turnout.auth")


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord
    expires: float
    """The expiry as a POSIX timestamp (infinity: never), so `find` compares two floats."""


class KeyRing:
    """The active keys by digest, loaded at start and reloaded whenever the database's keys version moves.

    `clock` (monotonic seconds) times `age()`, how long ago the keys were last confirmed current; `wall_clock`
    (POSIX seconds) is what expiry is checked against, injectable for tests.
    """

    def __init__(
        self,
        database: Database,
        *,
        refresh: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._refresh = refresh
        self._clock = clock
        self._wall_clock = wall_clock
        self._by_digest: dict[str, _Entry] = {}
        self._version: int | None = None
        self._loaded_at: float | None = None
        self._failing = False
        self._stop = asyncio.Event()
        self._stopped: asyncio.Event | None = None

    @property
    def version(self) -> int | None:
        """The keys version last loaded (None before the first load)."""
        return self._version

    def __len__(self) -> int:
        return len(self._by_digest)

    def age(self) -> float | None:
        """Seconds (by `clock`) since the keys were last confirmed current; None before the first load."""
        return None if self._loaded_at is None else self._clock() - self._loaded_at

    async def start(self, tasks: BackgroundTasks) -> None:
        """Load the keys (a failure here raises: a server must not start without them), then poll in `tasks`."""
        await self.refresh()
        self._stopped = asyncio.Event()
        tasks.spawn(self._poll(self._stopped), name="turnout-keyring-poll")

    def find(self, presented: bytes) -> KeyRecord | None:
        """The record of the key `presented`, or None for an unknown, revoked or expired key.

        The dict lookup is by the digest of what was presented, which a caller cannot steer toward a stored
        digest; the digests are then compared in constant time all the same.
        """
        digest = digest_of(presented)
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.record.digest, digest):
            return None
        if self._wall_clock() >= entry.expires:
            return None
        return entry.record

    async def refresh(self) -> bool:
        """Reload the keys if their version moved (or none are loaded); True when they were reloaded.

        Raises:
            DatabaseError: the database did not answer.
        """
        version = await self._database.keys_version()  # read first: a change made during the load shows next time
        if version == self._version:
            self._loaded_at = self._clock()
            return False
        records = await self._database.keys()
        by_digest = {}
        for record in records:
            if record.revoked_at is not None:
                continue
            expires = float("inf") if record.expires_at is None else record.expires_at.timestamp()
            by_digest[record.digest] = _Entry(record, expires)
        self._by_digest = by_digest  # one assignment: `find` sees the old keys or the new, never a mix
        self._version = version
        self._loaded_at = self._clock()
        return True

    async def _poll(self, stopped: asyncio.Event) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self._refresh)
                    break
                except TimeoutError:
                    pass
                await self._poll_once()
        finally:
            stopped.set()

    async def _poll_once(self) -> None:
        try:
            reloaded = await self.refresh()
        except (DatabaseError, OSError) as exc:
            if not self._failing:
                logger.warning(
                    "cannot read the keys from %s (%s): keeping the %d keys last loaded until it answers",
                    self._database.display_url,
                    type(exc).__name__,
                    len(self._by_digest),
                )
            self._failing = True
            return
        if self._failing:
            logger.info("the keys database %s answers again", self._database.display_url)
            self._failing = False
        if reloaded:
            logger.debug("keys reloaded: version %s, %d active", self._version, len(self._by_digest))

    async def close(self) -> None:
        """Stop polling (and wait for the poll task to end)."""
        self._stop.set()
        if self._stopped is not None:
            await self._stopped.wait()
