"""`turnout index add` at scale: `python -m tests.bench.indexing [--files 1000 5000 ...]`.

Writes N small Markdown files (a title, two sections of a few sentences) into a temporary directory and
adds them all to a new index with the local model, as `turnout index add DIR --index IDX` does (walk,
read, chunk, embed, then save), timing each step. Then adds one more file to the index of the largest
N, the incremental case. Printed per N: seconds in total and per file; the ratio of the time per file
between the largest and the smallest N tells linear (about 1) from quadratic (about N_max / N_min).

Prints figures, asserts nothing. Run it on another commit with `PYTHONPATH=<its checkout>` to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from routes.knowledge.embedding import LocalEmbedder
from routes.knowledge.index import KnowledgeIndex
from routes.knowledge.indexer import add_files, expand_paths

_TEXT = (
    "invoice refund delivery courier account password billing card bank hub device power supply support hours "
    "monday friday error declined shipping address order return warranty repair battery"
)
_WORDS = _TEXT.split()


def write_corpus(directory: Path, files: int, seed: int = 7) -> None:
    """`files` Markdown files of about 120 words each, in subdirectories of 1,000."""
    rng = random.Random(seed)
    for number in range(files):
        folder = directory / f"part{number // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = [f"# Document {number}", ""]
        for section in range(2):
            body += [f"## Section {section}", "", " ".join(rng.choice(_WORDS) for _ in range(60)) + ".", ""]
        (folder / f"doc{number:06d}.md").write_text("\n".join(body), encoding="utf-8")


async def measure(files: int, embedder: LocalEmbedder, *, incremental: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="turnout-bench-index-") as scratch:
        root = Path(scratch)
        write_corpus(root / "docs", files)
        started = time.perf_counter()
        paths = expand_paths([root / "docs"])
        index = KnowledgeIndex.empty(root / "index", embedder.name, embedder.dimension)
        index, report = await add_files(index, paths, embedder)
        added = time.perf_counter()
        index.save()
        saved = time.perf_counter()
        figures = {"add": added - started, "save": saved - added, "chunks": float(len(index.chunks))}
        if incremental:
            extra = root / "extra.md"
            extra.write_text("# One more\n\nA late document about the refund of a courier delivery.\n")
            again = time.perf_counter()
            loaded = KnowledgeIndex.load(root / "index")
            loaded, _ = await add_files(loaded, [extra], embedder)
            loaded.save()
            figures["one_more"] = time.perf_counter() - again
        assert len(report.added) == files
        return figures


async def main(sizes: list[int]) -> None:
    embedder = LocalEmbedder(256)
    await embedder.embed(["warm up"])
    per_file: dict[int, float] = {}
    for files in sizes:
        figures = await measure(files, embedder, incremental=files == max(sizes))
        total = figures["add"] + figures["save"]
        per_file[files] = total / files
        line = (
            f"{files:>7} files ({int(figures['chunks'])} chunks): add {figures['add']:.2f} s, "
            f"save {figures['save']:.2f} s, {1000 * per_file[files]:.2f} ms/file"
        )
        if "one_more" in figures:
            line += f"; one more file into it: {figures['one_more']:.2f} s"
        print(line, flush=True)
    smallest, largest = min(sizes), max(sizes)
    if largest > smallest:
        ratio = per_file[largest] / per_file[smallest]
        print(
            f"time per file, {largest} vs {smallest} files: x{ratio:.2f} "
            f"(linear: ~1; quadratic: ~{largest / smallest:.0f})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 5000], metavar="N")
    arguments = parser.parse_args()
    asyncio.run(main(sorted(arguments.files)))
    sys.exit(0)
