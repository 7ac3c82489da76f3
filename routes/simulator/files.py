"""The simulator's Files API: uploads kept in memory, listed, described, downloaded as a stream, deleted.

`POST /v1/files` reads the multipart body (`file`, `purpose`) part by part, in chunks of `CHUNK_BYTES`,
and keeps the chunks as they arrived: a 100 MB upload is held once, never joined into one copy or
re-read. `GET /v1/files/{id}/content` writes the same chunks out one by one, with the file's
`content-type` and a `content-disposition` naming it. What is kept is bounded: a file at most
`MAX_FILE_BYTES` (OpenAI's 512 MB), all files together at most `MAX_TOTAL_BYTES` (1 GiB) and
`MAX_FILES`; past a bound the upload is a 413 (the body's declared length is checked before any of it is
read). Files live as long as the simulator process; batches write their output files here too.

Objects are OpenAI's `OpenAIFile`: `file-` ids, `bytes`, `created_at`, `filename`, `purpose`,
`status: processed`. Lists take `purpose`, `limit` (1 to 10,000), `after` (a file id) and `order`
(`desc` by default).
"""

from __future__ import annotations

import mimetypes
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.multipart import BadContentDispositionHeader

from routes.simulator.faults import RECORD, simulated, with_faults
from routes.simulator.limits import SimulatorRejectedError

__all__ = [
    "CHUNK_BYTES",
    "FILES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "FileStore",
    "StoredFile",
    "add_file_routes",
    "page",
]

CHUNK_BYTES = 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_FILES = 10_000
PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data"})
_MULTIPART_SLACK = 64 * 1024
"""What a multipart body holds besides the file (boundaries, part headers, `purpose`)."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file in memory: its metadata and its content, in the chunks it arrived in."""

    id: str
    filename: str
    purpose: str
    created_at: int
    chunks: tuple[bytes, ...]
    size: int

    def described(self) -> dict[str, Any]:
        """The file as an `OpenAIFile` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }

    def content(self) -> bytes:
        """The whole content as one `bytes` (for a batch's input: small files only)."""
        return b"".join(self.chunks)


class FileStore:
    """The simulator's files, by id, oldest first, bounded in count and in bytes."""

    def __init__(self, max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
        self.max_total_bytes = max_total_bytes
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._reserved = 0

    @property
    def used(self) -> int:
        """Bytes held by kept files and uploads under way."""
        return self._reserved

    def reserve(self, size: int) -> None:
        """Count `size` more bytes against the total (an upload's next chunk).

        Raises:
            SimulatorRejectedError: the total would pass its bound (413).
        """
        if self._reserved + size > self.max_total_bytes:
            message = f"The simulator keeps at most {self.max_total_bytes} bytes of files; delete some first."
            raise SimulatorRejectedError(message, status=413, param="file", code="files_storage_full")
        self._reserved += size

    def release(self, size: int) -> None:
        """Give back bytes counted by `reserve` (an upload that failed, a file deleted)."""
        self._reserved = max(0, self._reserved - size)

    def add(self, filename: str, purpose: str, chunks: tuple[bytes, ...], size: int) -> StoredFile:
        """Keep a file whose `size` bytes were reserved already."""
        if len(self._files) >= MAX_FILES:
            self.release(size)
            raise SimulatorRejectedError(f"The simulator keeps at most {MAX_FILES} files.", status=413, param="file")
        stored = StoredFile(
            id=f"file-{secrets.token_hex(12)}",
            filename=filename,
            purpose=purpose,
            created_at=int(time.time()),
            chunks=chunks,
            size=size,
        )
        self._files[stored.id] = stored
        return stored

    def put(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        """Keep a file the simulator makes itself (a batch's output)."""
        self.reserve(len(content))
        return self.add(filename, purpose, (content,), len(content))

    def get(self, file_id: str) -> StoredFile:
        """The file `file_id`.

        Raises:
            SimulatorRejectedError: no such file (404, as OpenAI answers).
        """
        stored = self._files.get(file_id)
        if stored is None:
            raise SimulatorRejectedError(f"No such File object: {file_id[:64]}", status=404, param="id")
        return stored

    def delete(self, file_id: str) -> None:
        """Forget `file_id` (a 404 if there is none)."""
        stored = self.get(file_id)
        del self._files[file_id]
        self.release(stored.size)

    def all(self) -> list[StoredFile]:
        """Every file, oldest first."""
        return list(self._files.values())


FILES = web.AppKey[FileStore]("files")


def page(request: web.Request, objects: list[dict[str, Any]], default_limit: int, with_ids: bool) -> dict[str, Any]:
    """One page of a list answer: `limit`, `after` (an id), `order` (by `created_at`, `desc` unless asked).

    `objects` come oldest first; `with_ids` adds `first_id` and `last_id` (as the files and batches lists do).

    Raises:
        SimulatorRejectedError: `limit` or `order` is not one OpenAI accepts.
    """
    query = request.query
    try:
        limit = int(query.get("limit", default_limit))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 10_000:
        raise SimulatorRejectedError("Invalid 'limit': expected an integer from 1 to 10000.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise SimulatorRejectedError("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    ordered = objects if order == "asc" else objects[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    data = ordered[:limit]
    answer: dict[str, Any] = {"object": "list", "data": data, "has_more": len(ordered) > limit}
    if with_ids:
        answer["first_id"] = data[0]["id"] if data else None
        answer["last_id"] = data[-1]["id"] if data else None
    return answer


def _too_large(limit: int) -> SimulatorRejectedError:
    message = f"The file is larger than the simulator's limit of {limit} bytes."
    return SimulatorRejectedError(message, status=413, param="file", code="file_too_large")


async def _read_part(part: BodyPartReader, store: FileStore, limit: int) -> tuple[tuple[bytes, ...], int]:
    """A part's content in chunks, each counted against the store's bound and `limit` as it arrives."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await part.read_chunk(CHUNK_BYTES):
            if size + len(chunk) > limit:
                raise _too_large(limit)
            store.reserve(len(chunk))
            size += len(chunk)
            chunks.append(chunk)
    except BaseException:
        store.release(size)
        raise
    return tuple(chunks), size


async def _upload(request: web.Request) -> web.Response:
    try:
        if not request.content_type.startswith("multipart/"):
            raise SimulatorRejectedError("Uploads are multipart/form-data with a 'file' and a 'purpose'.", param="file")
        _, error = await simulated(request, {})
        if error is not None:
            await _drain(request)
            return error
        try:
            return await _store_upload(request)
        except (ValueError, BadContentDispositionHeader) as exc:  # aiohttp's word for a malformed multipart body
            raise SimulatorRejectedError(f"The multipart body is malformed: {str(exc)[:80]}", param="file") from exc
    except SimulatorRejectedError:
        await _drain(request)
        raise


async def _drain(request: web.Request) -> None:
    """Read what is left of the body, keeping none of it, so that the client gets to read the answer."""
    while await request.content.readany():
        pass


async def _store_upload(request: web.Request) -> web.Response:
    store = request.app[FILES]
    declared = request.content_length or 0
    if declared > MAX_FILE_BYTES + _MULTIPART_SLACK:
        raise _too_large(MAX_FILE_BYTES)
    if declared > store.max_total_bytes - store.used + _MULTIPART_SLACK:
        store.reserve(declared)  # raises the store's 413 before a byte is kept
    purpose, filename, content = None, "file", None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.read_chunk(256)).decode("utf-8", "replace")
        elif part.name == "file" and content is None:
            filename = part.filename or "file"
            content = await _read_part(part, store, MAX_FILE_BYTES)
    if content is None:
        raise SimulatorRejectedError(
            "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
        )
    if purpose not in PURPOSES:
        store.release(content[1])
        message = f"Invalid 'purpose': {str(purpose)[:40]!r}; expected one of {', '.join(sorted(PURPOSES))}."
        raise SimulatorRejectedError(message, param="purpose")
    stored = store.add(filename[:256], purpose, *content)
    request[RECORD].update(
        raw_bytes=stored.size, body={"purpose": purpose, "filename": stored.filename, "id": stored.id}
    )
    return web.json_response(stored.described())


def _disposition(filename: str) -> str:
    """`content-disposition` for a download of `filename` (RFC 6266: an ASCII name, and the UTF-8 one)."""
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    if plain == filename:
        return f'attachment; filename="{plain}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _list(request: web.Request) -> web.Response:
    purpose = request.query.get("purpose")
    files = [f.described() for f in request.app[FILES].all() if purpose is None or f.purpose == purpose]
    return web.json_response(page(request, files, 10_000, with_ids=True))


async def _retrieve(request: web.Request) -> web.Response:
    return web.json_response(request.app[FILES].get(request.match_info["file_id"]).described())


async def _delete(request: web.Request) -> web.Response:
    file_id = request.match_info["file_id"]
    request.app[FILES].delete(file_id)
    return web.json_response({"id": file_id, "object": "file", "deleted": True})


async def _content(request: web.Request) -> web.StreamResponse:
    fault, error = await simulated(request, {})
    if error is not None:
        return error
    stored = request.app[FILES].get(request.match_info["file_id"])
    content_type = mimetypes.guess_type(stored.filename)[0] or "application/octet-stream"
    response = web.StreamResponse(
        headers={
            "content-type": content_type,
            "content-disposition": _disposition(stored.filename),
        }
    )
    response.content_length = stored.size
    await response.prepare(request)
    sent = 0
    for chunk in stored.chunks:
        if fault in ("disconnect", "midstream") and sent + len(chunk) > stored.size // 2:
            await response.write(chunk[: stored.size // 2 - sent])
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write(chunk)
        sent += len(chunk)
    await response.write_eof()
    return response


def add_file_routes(app: web.Application) -> None:
    """Serve the Files API from `app` (under `/v1` and without it), with an empty store."""
    app[FILES] = FileStore()
    for prefix in ("/v1", ""):
        app.router.add_post(prefix + "/files", _upload)
        app.router.add_get(prefix + "/files", with_faults(_list))
        app.router.add_get(prefix + "/files/{file_id}", with_faults(_retrieve))
        app.router.add_delete(prefix + "/files/{file_id}", with_faults(_delete))
        app.router.add_get(prefix + "/files/{file_id}/content", _content)
