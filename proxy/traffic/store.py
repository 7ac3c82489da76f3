"""`TrafficStore`: where logged exchanges live (one Protocol; SQLite, PostgreSQL or JSONL), and `open_traffic_store()`.

The read API, for what reads the log (export, replay, feedback):

    store = open_traffic_store("sqlite:///traffic.db" | "postgresql://..." | "/path/traffic.jsonl" | "jsonl:///dir")
    await store.write(exchanges: Sequence[Exchange]) -> None
                                                                     # one transaction; a repeated request_id: kept once
    store.exchanges(*, since: float | None = None, until: float | None = None, route: str | None = None,
                    rule: str | None = None, with_content: bool = False) -> AsyncIterator[Exchange]
                                                                     # time order (at, then request_id),
                                                                     # since <= at < until
    await store.get(request_id: str, *, with_content: bool = True) -> Exchange | None
    await store.feedback(request_id: str, *, score: float | None, label: str | None, comment: str | None) -> bool
                                                                     # False when no exchange has that id; a None leaves
                                                                     # that field as it was
    await store.prune(*, older_than: float | None, max_rows: int | None) -> int
                                                                     # drops exchanges with at < older_than, then the
                                                                     # oldest beyond max_rows; returns how many went
    await store.close() -> None

A store connects on first use (or `await store.open()`); `display_url` names it without secrets. Times are unix
seconds (float); `with_content=False` leaves `request` and `answer` None (and skips reading them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

from proxy.traffic.record import Exchange

__all__ = ["TrafficStore", "TrafficStoreError", "open_traffic_store"]


class TrafficStoreError(Exception):
    """The store could not be reached or did not answer: the driver's own error is the cause."""


class TrafficStore(Protocol):
    """Where exchanges are written and read back. Implementations raise `TrafficStoreError` for their own failures."""

    display_url: str
    """The store's URL or path with any password replaced by `***`."""

    async def open(self) -> None:
        """Connect (creating files and tables when missing); every other method calls it when needed."""

    async def write(self, exchanges: Sequence[Exchange]) -> None:
        """Append `exchanges` in one transaction; an exchange whose request_id is stored already is skipped."""

    def exchanges(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        route: str | None = None,
        rule: str | None = None,
        with_content: bool = False,
    ) -> AsyncIterator[Exchange]:
        """The stored exchanges with `since <= at < until` (of that route and rule), in time order."""

    async def get(self, request_id: str, *, with_content: bool = True) -> Exchange | None:
        """The exchange of that request id, or None."""

    async def feedback(self, request_id: str, *, score: float | None, label: str | None, comment: str | None) -> bool:
        """Attach feedback to the exchange `request_id` (a None leaves that field as it was); False when unknown."""

    async def prune(self, *, older_than: float | None, max_rows: int | None) -> int:
        """Delete exchanges older than `older_than` (unix seconds), then the oldest beyond `max_rows`; how many went."""

    async def close(self) -> None:
        """Release connections and files."""


def open_traffic_store(url_or_path: str) -> TrafficStore:
    """The store `url_or_path` names (not yet connected).

    `sqlite:///relative.db` or `sqlite:////absolute.db`; `postgresql://...` or `postgres://...` (with the keys
    database's optional `schema=NAME`); a path ending `.jsonl` (one file), or `jsonl:///dir` (the files
    `traffic.jsonl` and `feedback.jsonl` in that directory).

    Raises:
        ValueError: the URL is of none of these kinds.
    """
    scheme = url_or_path.partition(":")[0].lower()
    if scheme == "sqlite":
        from proxy.traffic.sqlite import SqliteTrafficStore

        if not url_or_path.lower().startswith("sqlite:///") or len(url_or_path) <= len("sqlite:///"):
            raise ValueError("an SQLite traffic store is sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return SqliteTrafficStore(Path(url_or_path[len("sqlite:///") :]))
    if scheme in ("postgresql", "postgres"):
        from proxy.traffic.postgres import PostgresTrafficStore

        return PostgresTrafficStore(url_or_path)
    if scheme == "jsonl":
        from proxy.traffic.jsonl import JsonlTrafficStore

        if not url_or_path.lower().startswith("jsonl:///") or len(url_or_path) <= len("jsonl:///"):
            raise ValueError("a JSONL traffic directory is jsonl:///relative/dir or jsonl:////absolute/dir")
        return JsonlTrafficStore.in_directory(Path(url_or_path[len("jsonl:///") :]))
    if url_or_path.lower().endswith(".jsonl"):
        from proxy.traffic.jsonl import JsonlTrafficStore

        return JsonlTrafficStore(Path(url_or_path))
    raise ValueError(
        "a traffic store is sqlite:///path.db, postgresql://..., a path ending .jsonl, or jsonl:///directory"
    )
