"""`KnowledgeIndex`: the knowledge index directory (chunks, vectors, lexical statistics) on disk and in memory.

A directory holds three files, written whole and swapped in with `os.replace` (the manifest last):

- `chunks.jsonl`: one chunk a line: its source file, heading path, position, text and term counts;
- `vectors.npy`: the chunks' embeddings, a float32 matrix with one unit row per chunk, in order;
- `manifest.json`: the format, the embedder's name and dimension, the version, and each source file's
  content hash and chunk count.

Sources are named by their path relative to the directory that holds the index (or absolute when
outside it), so an index and its documents can move together. The version is a hash of the embedder
and of every chunk's source, heading, position and text: it changes exactly when what retrieval can
return changes, which makes it a sound part of a cache key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from routes.knowledge.embedding import Vectors

__all__ = ["FORMAT", "ChunkRecord", "FileEntry", "KnowledgeIndex", "KnowledgeIndexError", "source_name"]

FORMAT = 1
_MANIFEST, _CHUNKS, _VECTORS = "manifest.json", "chunks.jsonl", "vectors.npy"


class KnowledgeIndexError(Exception):
    """The knowledge index directory is missing, unreadable or inconsistent."""


class ChunkRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One indexed passage, as stored in `chunks.jsonl`."""

    source: str
    heading: str
    position: int
    text: str
    terms: dict[str, int]
    """Term counts of the title, heading and text (`routes.knowledge.lexical.term_counts`), for BM25."""
    title: str = ""
    """Its document's title, embedded and counted with it (`routes.knowledge.ingest`); "" when none."""


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A source file as the manifest records it."""

    sha256: str
    chunks: int


class _Manifest(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    embedder: str
    dimension: int
    version: str
    chunks: int
    files: dict[str, FileEntry]


def source_name(path: Path, directory: Path) -> str:
    """How the index names `path`: relative to the index directory's parent when inside it, else absolute."""
    resolved, root = path.resolve(), directory.resolve().parent
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        return resolved.as_posix()


def _version(embedder: str, dimension: int, chunks: Iterable[ChunkRecord]) -> str:
    digest = hashlib.sha256(f"{FORMAT}\0{embedder}\0{dimension}\0".encode())
    for chunk in chunks:
        digest.update(f"{chunk.source}\0{chunk.heading}\0{chunk.position}\0{chunk.text}\0\0".encode())
        if chunk.title:  # an index of documents without titles keeps the version it had before titles were kept
            digest.update(f"{chunk.title}\0\0\0".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True, eq=False)
class KnowledgeIndex:
    """An index in memory: chunks in file order, their vectors row for row, and the files they came from."""

    directory: Path
    embedder: str
    dimension: int
    chunks: tuple[ChunkRecord, ...]
    vectors: Vectors
    files: dict[str, FileEntry]
    version: str

    @classmethod
    def empty(cls, directory: Path, embedder: str, dimension: int) -> KnowledgeIndex:
        """A new index with nothing in it, for `embedder`'s vectors."""
        vectors = np.zeros((0, dimension), dtype=np.float32)
        return cls(directory, embedder, dimension, (), vectors, {}, _version(embedder, dimension, ()))

    @classmethod
    def load(cls, directory: Path) -> KnowledgeIndex:
        """Read the index in `directory` into memory.

        Raises:
            KnowledgeIndexError: there is no index there, or its files do not agree with each other.
        """
        manifest_path = directory / _MANIFEST
        if not manifest_path.is_file():
            raise KnowledgeIndexError(
                f"no knowledge index in {directory} (create it with `turnout index add PATH --index DIR`)"
            )
        try:
            manifest = msgspec.json.decode(manifest_path.read_bytes(), type=_Manifest)
            lines = (directory / _CHUNKS).read_bytes().splitlines()
            chunks = tuple(msgspec.json.decode(line, type=ChunkRecord) for line in lines if line)
            vectors = np.load(directory / _VECTORS, allow_pickle=False)
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            raise KnowledgeIndexError(f"the knowledge index in {directory} is unreadable: {exc}") from exc
        if manifest.format != FORMAT:
            raise KnowledgeIndexError(f"the knowledge index in {directory} has format {manifest.format}, not {FORMAT}")
        shape = (manifest.chunks, manifest.dimension)
        if len(chunks) != manifest.chunks or vectors.shape != shape or vectors.dtype != np.float32:
            raise KnowledgeIndexError(
                f"the knowledge index in {directory} is inconsistent ({len(chunks)} chunks, vectors {vectors.shape}, "
                f"manifest {manifest.chunks}); add the files again into a new index"
            )
        return cls(directory, manifest.embedder, manifest.dimension, chunks, vectors, manifest.files, manifest.version)

    def save(self) -> None:
        """Write the index to its directory: each file whole, then renamed into place, the manifest last."""
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = _Manifest(
            format=FORMAT,
            embedder=self.embedder,
            dimension=self.dimension,
            version=self.version,
            chunks=len(self.chunks),
            files=self.files,
        )
        encoder = msgspec.json.Encoder()
        staged = {
            _CHUNKS: b"".join(encoder.encode(chunk) + b"\n" for chunk in self.chunks),
            _MANIFEST: msgspec.json.format(encoder.encode(manifest), indent=2) + b"\n",
        }
        vectors_tmp = self.directory / f".{_VECTORS}.tmp"
        with vectors_tmp.open("wb") as handle:
            np.save(handle, self.vectors, allow_pickle=False)
        for name in (_CHUNKS, _MANIFEST):
            (self.directory / f".{name}.tmp").write_bytes(staged[name])
        for name in (_VECTORS, _CHUNKS, _MANIFEST):
            os.replace(self.directory / f".{name}.tmp", self.directory / name)

    def without(self, sources: Iterable[str]) -> KnowledgeIndex:
        """This index without the chunks of `sources`."""
        dropped = set(sources).intersection(self.files)
        if not dropped:
            return self
        keep = [number for number, chunk in enumerate(self.chunks) if chunk.source not in dropped]
        return self._with(
            tuple(self.chunks[number] for number in keep),
            self.vectors[keep] if keep else self.vectors[:0],
            {name: entry for name, entry in self.files.items() if name not in dropped},
        )

    def replacing(self, source: str, sha256: str, chunks: Sequence[ChunkRecord], vectors: Vectors) -> KnowledgeIndex:
        """This index with `source`'s chunks (if any) replaced by `chunks` and their `vectors`, at the end."""
        return self.changed([(source, sha256, chunks, vectors)])

    def changed(self, files: Sequence[tuple[str, str, Sequence[ChunkRecord], Vectors]]) -> KnowledgeIndex:
        """This index with each `(source, sha256, chunks, vectors)` of `files` in place of that source's chunks.

        One pass however many files change: the old chunks of every source given are dropped together, the
        new ones appended in order, and the vectors concatenated and the version hashed once (adding N files
        one by one would copy and re-hash the whole index N times).
        """
        if not files:
            return self
        rest = self.without(source for source, _, _, _ in files)
        chunks = (*rest.chunks, *(chunk for _, _, records, _ in files for chunk in records))
        vectors = np.concatenate([rest.vectors, *(v.astype(np.float32, copy=False) for _, _, _, v in files)])
        entries = {source: FileEntry(sha256=sha, chunks=len(records)) for source, sha, records, _ in files}
        return rest._with(chunks, vectors, {**rest.files, **entries})

    def _with(self, chunks: tuple[ChunkRecord, ...], vectors: Vectors, files: dict[str, FileEntry]) -> KnowledgeIndex:
        version = _version(self.embedder, self.dimension, chunks)
        return KnowledgeIndex(self.directory, self.embedder, self.dimension, chunks, vectors, files, version)
