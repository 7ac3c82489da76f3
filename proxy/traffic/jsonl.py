"""`JsonlTrafficStore`: the traffic log as JSON Lines files, for a deployment without a database or a log shipper.

Two files: the exchanges, one `Exchange.to_row()` object a line, appended in batches; and the feedback,
one `{"request_id", "score", "label", "comment"}` a line, appended, the later line winning field by field.
Reads scan the file (once for the matching lines' offsets, which are sorted by time, then once to read them), so
they cost a pass over the log; prune rewrites it. Every file operation runs in one worker thread, in order.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from proxy.traffic.record import CONTENT_FIELDS, FEEDBACK_FIELDS, Exchange
from proxy.traffic.store import TrafficStoreError

__all__ = ["JsonlTrafficStore"]

T = TypeVar("T")
PAGE = 500
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
_Entry = tuple[float, str, int, int]
"""A matching line: its time, request id, offset and length."""


class JsonlTrafficStore:
    """Exchanges in `path` (JSON Lines), feedback in `feedback_path`."""

    def __init__(self, path: Path, feedback_path: Path | None = None) -> None:
        self.path = path
        self.feedback_path = feedback_path or path.with_name(path.stem + ".feedback.jsonl")
        self.display_url = str(path)
        self._executor: ThreadPoolExecutor | None = None
        self._ids: set[str] = set()

    @classmethod
    def in_directory(cls, directory: Path) -> JsonlTrafficStore:
        """The store of `directory/traffic.jsonl` and `directory/feedback.jsonl`."""
        store = cls(directory / "traffic.jsonl", directory / "feedback.jsonl")
        store.display_url = f"jsonl:///{directory}"
        return store

    async def open(self) -> None:
        """Create the directory and files when missing and read the request ids stored already."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnout-traffic-jsonl")
        await self._run(self._load_ids)

    def _load_ids(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.feedback_path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.feedback_path.touch()
        self._ids = {row["request_id"] for _, row in self._lines()}

    async def _run(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            await self.open()
        if self._executor is None:
            raise TrafficStoreError(f"{self.display_url} is closed")

        def call() -> T:
            try:
                return work()
            except (OSError, msgspec.DecodeError) as exc:
                raise TrafficStoreError(f"{self.display_url}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        """Stop the worker thread (the files are closed after every operation)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _lines(self) -> list[tuple[int, dict[str, Any]]]:
        """Every exchange line's offset and object."""
        found = []
        offset = 0
        with self.path.open("rb") as file:
            for line in file:
                if line.strip():
                    found.append((offset, _DECODER.decode(line)))
                offset += len(line)
        return found

    def _feedback(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        with self.feedback_path.open("rb") as file:
            for line in file:
                if line.strip():
                    row = _DECODER.decode(line)
                    given = {name: row[name] for name in FEEDBACK_FIELDS if row.get(name) is not None}
                    merged.setdefault(row["request_id"], {}).update(given)
        return merged

    async def write(self, exchanges: Sequence[Exchange]) -> None:
        """Append the exchanges whose request ids are new, in one write."""

        def append() -> None:
            lines = []
            for exchange in exchanges:
                if exchange.request_id not in self._ids:
                    self._ids.add(exchange.request_id)
                    lines.append(_ENCODER.encode(exchange.to_row()) + b"\n")
            if lines:
                with self.path.open("ab") as file:
                    file.write(b"".join(lines))

        if exchanges:
            await self._run(append)

    async def exchanges(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        route: str | None = None,
        rule: str | None = None,
        with_content: bool = False,
    ) -> AsyncIterator[Exchange]:
        """The matching exchanges in time order."""

        def matching() -> tuple[list[_Entry], dict[str, dict[str, Any]]]:
            entries = []
            offset = 0
            with self.path.open("rb") as file:
                for line in file:
                    if line.strip():
                        row = _DECODER.decode(line)
                        at = float(row["at"])
                        if (
                            (since is None or at >= since)
                            and (until is None or at < until)
                            and (route is None or row.get("route") == route)
                            and (rule is None or row.get("rule") == rule)
                        ):
                            entries.append((at, row["request_id"], offset, len(line)))
                    offset += len(line)
            entries.sort()
            return entries, self._feedback()

        entries, feedback = await self._run(matching)
        for start in range(0, len(entries), PAGE):
            page = entries[start : start + PAGE]
            for row in await self._run(lambda page=page: self._read(page)):  # type: ignore[misc]  # bound per page
                yield _exchange(row, feedback, with_content)

    def _read(self, entries: Sequence[_Entry]) -> list[dict[str, Any]]:
        rows = []
        with self.path.open("rb") as file:
            for _, _, offset, length in entries:
                file.seek(offset)
                rows.append(_DECODER.decode(file.read(length)))
        return rows

    async def get(self, request_id: str, *, with_content: bool = True) -> Exchange | None:
        """The exchange of that request id, or None (a scan of the file)."""

        def find() -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
            if request_id not in self._ids:
                return None, {}
            row = next((row for _, row in self._lines() if row["request_id"] == request_id), None)
            return row, self._feedback()

        row, feedback = await self._run(find)
        return None if row is None else _exchange(row, feedback, with_content)

    async def feedback(self, request_id: str, *, score: float | None, label: str | None, comment: str | None) -> bool:
        """Append a feedback line for a stored exchange; False when there is none of that id."""

        def append() -> bool:
            if request_id not in self._ids:
                return False
            line = {"request_id": request_id, "score": score, "label": label, "comment": comment}
            with self.feedback_path.open("ab") as file:
                file.write(_ENCODER.encode(line) + b"\n")
            return True

        return await self._run(append)

    async def prune(self, *, older_than: float | None, max_rows: int | None) -> int:
        """Rewrite the file without the exchanges older than `older_than` and the oldest beyond `max_rows`."""

        def rewrite() -> int:
            lines = self._lines()
            kept = [(float(row["at"]), row["request_id"], offset) for offset, row in lines]
            if older_than is not None:
                kept = [entry for entry in kept if entry[0] >= older_than]
            kept.sort()
            if max_rows is not None:
                kept = kept[max(len(kept) - max_rows, 0) :]
            removed = len(lines) - len(kept)
            if removed:
                keep_offsets = {offset for _, _, offset in kept}
                self._replace(keep_offsets)
                self._ids = {request_id for _, request_id, _ in kept}
            return removed

        return await self._run(rewrite)

    def _replace(self, keep_offsets: set[int]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        offset = 0
        with self.path.open("rb") as source, temporary.open("wb") as target:
            for line in source:
                if offset in keep_offsets:
                    target.write(line)
                offset += len(line)
        os.replace(temporary, self.path)


def _exchange(row: dict[str, Any], feedback: dict[str, dict[str, Any]], with_content: bool) -> Exchange:
    row = {**row, **feedback.get(row["request_id"], {})}
    if not with_content:
        for name in CONTENT_FIELDS:
            row[name] = None
    return Exchange.from_row(row)
