"""Adding files to a knowledge index and removing them: incremental, by each file's content hash.

Linear in the number of files: chunks are embedded in batches across files, and the index is rebuilt
once with every change (`KnowledgeIndex.changed`), not copied and re-hashed after each file.

A file whose content hash is the one recorded is skipped; a changed file's chunks are replaced whole; a
file can be dropped by name. Directories are walked for the suffixes `routes.knowledge.ingest` reads. The caller
saves the returned index (`KnowledgeIndex.save`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from routes.knowledge.embedding import Embedder, Vectors, check_compatible
from routes.knowledge.index import ChunkRecord, KnowledgeIndex, source_name
from routes.knowledge.ingest import SUFFIXES, Chunk, read_chunks
from routes.knowledge.lexical import term_counts

__all__ = ["AddReport", "add_files", "expand_paths", "remove_files"]

_EMBED_BATCH = 256


@dataclass(slots=True)
class AddReport:
    """What `add_files` did, file by file."""

    added: list[str] = field(default_factory=list)
    """New files."""
    replaced: list[str] = field(default_factory=list)
    """Files whose content changed: their old chunks were replaced."""
    unchanged: list[str] = field(default_factory=list)
    """Files skipped: same content hash as recorded."""
    chunks: int = 0
    """Chunks embedded."""


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, and the readable files under each directory given (sorted, hidden ones skipped).

    Raises:
        FileNotFoundError: a path does not exist.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = (p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES)
            files.extend(p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return files


async def add_files(
    index: KnowledgeIndex,
    files: Sequence[Path],
    embedder: Embedder,
    *,
    progress: Callable[[int], None] = lambda done: None,
) -> tuple[KnowledgeIndex, AddReport]:
    """`index` with `files` added or replaced; `progress(n)` is called as each file is done.

    Raises:
        EmbedderMismatchError: `index` was made by another embedder.
        UnsupportedFileError: a file's format is unknown or its content unreadable.
        OSError: a file cannot be read.
    """
    check_compatible(index.embedder, index.dimension, embedder)
    report = AddReport()
    changes: list[tuple[str, str, list[ChunkRecord], Vectors]] = []
    pending: list[tuple[str, str, list[Chunk]]] = []  # read, not yet embedded
    waiting = 0  # their chunks

    async def embed_pending() -> None:
        nonlocal waiting
        texts = [chunk.indexed_text for _, _, chunks in pending for chunk in chunks]
        batches = [
            (await embedder.embed(texts[at : at + _EMBED_BATCH])).vectors for at in range(0, len(texts), _EMBED_BATCH)
        ]
        vectors = np.concatenate(batches) if batches else np.zeros((0, index.dimension), dtype=np.float32)
        at = 0
        for source, digest, chunks in pending:
            changes.append(
                (source, digest, [_record(source, chunk) for chunk in chunks], vectors[at : at + len(chunks)])
            )
            at += len(chunks)
        progress(len(pending))
        pending.clear()
        waiting = 0

    seen: set[str] = set()
    for path in files:
        source = source_name(path, index.directory)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        known = index.files.get(source)
        if source in seen or (known is not None and known.sha256 == digest):
            report.unchanged.append(source)
            progress(1)
            continue
        seen.add(source)
        chunks = read_chunks(path)
        pending.append((source, digest, chunks))
        waiting += len(chunks)
        (report.replaced if known is not None else report.added).append(source)
        report.chunks += len(chunks)
        if waiting >= _EMBED_BATCH:
            await embed_pending()
    await embed_pending()
    return index.changed(changes), report


def _record(source: str, chunk: Chunk) -> ChunkRecord:
    terms = term_counts(chunk.indexed_text)
    return ChunkRecord(
        source=source, heading=chunk.heading, position=chunk.position, text=chunk.text, terms=terms, title=chunk.title
    )


def remove_files(index: KnowledgeIndex, paths: Iterable[Path | str]) -> tuple[KnowledgeIndex, list[str], list[str]]:
    """`index` without the given files (by path, or by the name the index gives them).

    Returns the index, the sources removed, and the names that were not in the index.
    """
    removed: list[str] = []
    missing: list[str] = []
    for path in paths:
        name = str(path)
        if name not in index.files:
            name = source_name(Path(path), index.directory)
        (removed if name in index.files else missing).append(name if name in index.files else str(path))
    return index.without(removed), removed, missing
