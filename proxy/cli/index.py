"""`turnout index add | remove | stats | search`: build a knowledge index directory, and look into it.

`search --queries FILE` runs many queries against one loaded index and embedder (the start-up, about
1.5 s, is paid once), printing one JSON line per query: its `id` when given, the query, and its passages
with their rank, source, heading, position, similarity, fused score and text.

The embedder is the local model unless `--config FILE` names a policy file whose `embedder` section
says otherwise (only that section and its upstream are read, so an index can be built before the
policy that uses it is valid). An index made by one embedder is never added to or searched with
another: that is an error with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from tqdm import tqdm

from proxy.config.errors import ConfigError
from proxy.config.rag import UPSTREAM_DIMENSION
from proxy.config.settings import load_embedder_settings
from proxy.semantic import open_upstream
from proxy.wire.errors import ProxyError
from routes import HybridRetriever, KnowledgeIndex, KnowledgeIndexError, OpenAIEmbedder, Passage
from routes.knowledge.embedding import Embedder, EmbedderMismatchError, check_compatible, local_embedder
from routes.knowledge.indexer import add_files, expand_paths, remove_files
from routes.knowledge.ingest import UnsupportedFileError

__all__ = ["add_index_commands", "run_index_command"]


def _print(text: str = "") -> None:
    print(text)  # noqa: T201 - the command's output


@contextlib.asynccontextmanager
async def _embedder(config: str | None) -> AsyncIterator[Embedder]:
    settings, upstream = load_embedder_settings(config)
    if upstream is None:
        yield local_embedder(settings.model, settings.dimension)  # checked by load_embedder_settings
        return
    async with open_upstream(upstream) as opened:  # a model: checked above
        yield OpenAIEmbedder(opened, settings.model or "", settings.dimension or UPSTREAM_DIMENSION)


def _open(directory: Path, embedder: Embedder | None = None) -> KnowledgeIndex:
    """The index in `directory`; a new, empty one for `embedder` when there is none yet."""
    if embedder is not None and not (directory / "manifest.json").exists():
        return KnowledgeIndex.empty(directory, embedder.name, embedder.dimension)
    return KnowledgeIndex.load(directory)


async def _add(args: argparse.Namespace) -> int:
    files = expand_paths(Path(path) for path in args.paths)
    async with _embedder(args.config) as embedder:
        index = _open(Path(args.index), embedder)
        with tqdm(total=len(files), unit="file", desc="indexing", disable=args.quiet or None) as bar:
            index, report = await add_files(index, files, embedder, progress=bar.update)
    index.save()
    _print(
        f"{args.index}: {len(report.added)} added, {len(report.replaced)} replaced, {len(report.unchanged)} unchanged; "
        f"{report.chunks} chunks embedded; {len(index.chunks)} chunks in {len(index.files)} files; "
        f"version {index.version}"
    )
    return 0


async def _remove(args: argparse.Namespace) -> int:
    index = _open(Path(args.index))
    index, removed, missing = remove_files(index, args.paths)
    index.save()
    for name in missing:
        print(f"turnout index remove: {name}: not in the index", file=sys.stderr)  # noqa: T201
    _print(f"{args.index}: {len(removed)} removed; {len(index.chunks)} chunks left; version {index.version}")
    return 1 if missing else 0


async def _stats(args: argparse.Namespace) -> int:
    index = _open(Path(args.index))
    _print(f"index: {index.directory}")
    _print(f"embedder: {index.embedder} ({index.dimension} dimensions)")
    _print(f"version: {index.version}")
    _print(f"files: {len(index.files)}, chunks: {len(index.chunks)}")
    for name, entry in sorted(index.files.items()):
        _print(f"  {name}: {entry.chunks} chunks (sha256 {entry.sha256[:12]})")
    return 0


class _Query(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    query: str
    id: Any = None


def _queries(path: str) -> list[_Query]:
    """The queries of a file (`-`: standard input): one a line, or JSON lines `{"query": ..., "id": ...}`.

    Raises:
        ValueError: a JSON line without a string `query` (its line number said).
    """
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    found: list[_Query] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith("{"):
            found.append(_Query(line))
            continue
        try:
            found.append(msgspec.json.decode(line, type=_Query))
        except msgspec.DecodeError as exc:
            raise ValueError(f"{path}:{number}: not a query ({exc})") from None
    return found


def _found(query: _Query, passages: list[Passage]) -> bytes:
    hits = [
        {
            "rank": rank,
            "source": p.source,
            "heading": p.heading,
            "position": p.position,
            "similarity": round(p.similarity, 6),
            "score": round(p.score, 6),
            "text": p.text,
        }
        for rank, p in enumerate(passages, start=1)
    ]
    head = {"id": query.id} if query.id is not None else {}
    return msgspec.json.encode({**head, "query": query.query, "passages": hits})


def _print_passages(passages: list[Passage]) -> None:
    if not passages:
        _print("no passage found")
    for rank, passage in enumerate(passages, start=1):
        where = f"{passage.source} > {passage.heading}" if passage.heading else passage.source
        scores = f"similarity {passage.similarity:.3f}, score {passage.score:.3f}"
        _print(f"{rank}. {where} (chunk {passage.position}; {scores})")
        text = passage.text if len(passage.text) <= 240 else passage.text[:237] + "..."
        _print(f"   {text}")


async def _search(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.queries is None):
        print("turnout index search: give one QUERY, or --queries FILE", file=sys.stderr)  # noqa: T201
        return 2
    queries = [_Query(args.query)] if args.query is not None else _queries(args.queries)
    index = _open(Path(args.index))
    async with _embedder(args.config) as embedder:
        check_compatible(index.embedder, index.dimension, embedder)
        retriever = HybridRetriever(index, embedder)  # loaded once, whatever the number of queries
        for query in queries:
            passages = (await retriever.search(query.query, top_k=args.top_k, min_score=args.min_score)).passages
            if args.json or args.queries is not None:
                _print(_found(query, passages).decode())
            else:
                _print_passages(passages)
    return 0


def add_index_commands(commands: Any) -> None:
    """Register `index` and its subcommands on the CLI's subparsers."""
    index = commands.add_parser("index", help="build and inspect a knowledge index (for RAG routes)")
    actions = index.add_subparsers(dest="index_command", required=True)
    config_help = "a policy file whose `embedder` to use (default: the local model)"
    add = actions.add_parser("add", help="add or update files (Markdown, text, HTML, PDF; directories walked)")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.add_argument("--config", metavar="FILE", help=config_help)
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    remove = actions.add_parser("remove", help="drop files from the index")
    remove.add_argument("paths", nargs="+", metavar="PATH")
    stats = actions.add_parser("stats", help="what the index holds")
    search = actions.add_parser("search", help="what a query (or a file of queries) finds (hybrid search)")
    search.add_argument("query", nargs="?")
    search.add_argument(
        "--queries",
        metavar="FILE",
        help="many queries in one run: one a line, or JSON lines {query, id} (`-`: stdin); prints JSON lines",
    )
    search.add_argument("--json", action="store_true", help="one JSON line per query: its passages and scores")
    search.add_argument("--top-k", type=int, default=5, metavar="K")
    search.add_argument("--min-score", type=float, default=-1.0, metavar="S", help="least cosine similarity")
    search.add_argument("--config", metavar="FILE", help=config_help)
    for parser in (add, remove, stats, search):
        parser.add_argument("--index", required=True, metavar="DIR", help="the index directory")


def run_index_command(args: argparse.Namespace) -> int:
    """Run an `index` subcommand; problems are reported on stderr with exit status 1."""
    command = {"add": _add, "remove": _remove, "stats": _stats, "search": _search}[args.index_command]
    try:
        return asyncio.run(command(args))
    except (
        ConfigError,
        KnowledgeIndexError,
        EmbedderMismatchError,
        UnsupportedFileError,
        ProxyError,
        OSError,
        ValueError,
    ) as exc:
        print(f"turnout index {args.index_command}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
