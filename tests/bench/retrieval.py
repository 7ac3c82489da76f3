"""Retrieval quality and latency: `python -m tests.bench.retrieval` (also run by `make bench`).

Quality: on the two BEIR sets in `../shared/datasets/` (msmarco, dbpedia; 5,000 documents and 50
queries each), every document becomes one chunk (its title as the heading), embedded with a local
model (`--model`, default the default), and the 50 queries are ranked by lexical (BM25), dense
(cosine) and the hybrid fusions at their default weights. Printed side by side: recall@10 and nDCG@10
(graded relevance, as BEIR computes it). Then the held-out check: the fusion and weight of `GRID` with
the best nDCG@10 on one set, and what they score on the other set, which they were not tuned on
(both ways round; the shipped default is the one tuned on msmarco, reported on dbpedia).

Latency: both sets together make a 10,000-chunk index; each query is embedded and searched (hybrid,
top 10), interleaving the modes, repeated; printed: p50 and p95 per mode.

Needs `../shared/datasets/` beside the repository (it says so and exits when it is absent). Prints
figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, get_args

import msgspec
import numpy as np
import numpy.typing as npt

from routes.knowledge.embedding import LOCAL_MODELS, Embedder, LocalEmbedder, Vectors, local_embedder
from routes.knowledge.index import ChunkRecord, KnowledgeIndex
from routes.knowledge.lexical import term_counts
from routes.knowledge.retrieval import WEIGHTS, Fusion, HybridRetriever, fuse, one_blas_thread

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
SETS = ("msmarco", "dbpedia")


class Embedding(Embedder, Protocol):
    """A local embedder: an `Embedder` that also embeds on the calling thread."""

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """One unit row per text."""
        ...


class _Doc(msgspec.Struct):
    _id: str = msgspec.field(name="_id")
    text: str
    title: str = ""


class _Query(msgspec.Struct):
    _id: str = msgspec.field(name="_id")
    text: str


def load_set(name: str) -> tuple[list[_Doc], list[_Query], dict[str, dict[str, int]]]:
    folder = DATASETS / name
    docs = [msgspec.json.decode(line, type=_Doc) for line in (folder / "corpus.jsonl").read_bytes().splitlines()]
    queries = [msgspec.json.decode(line, type=_Query) for line in (folder / "queries.jsonl").read_bytes().splitlines()]
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not parts[2].strip().lstrip("-").isdigit():
            continue  # the header line
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return docs, queries, qrels


def build_index(docs: list[_Doc], embedder: Embedding, name: str, cache: Path | None = None) -> KnowledgeIndex:
    """Every document one chunk (its title as the heading), embedded; the vectors kept in `cache` if given."""
    chunks = tuple(
        ChunkRecord(
            source=doc._id,
            heading=doc.title,
            position=0,
            text=doc.text,
            terms=term_counts(f"{doc.title}\n{doc.text}"),
        )
        for doc in docs
    )
    texts = [f"{doc.title}\n{doc.text}" if doc.title else doc.text for doc in docs]
    kept = cache / f"{embedder.name.replace('/', '_')}-{embedder.dimension}-{name}.npy" if cache else None
    if kept is not None and kept.is_file():
        vectors = np.load(kept)
    else:
        vectors = embedder.embed_sync(texts)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            np.save(kept, vectors)
    return KnowledgeIndex(Path(name), embedder.name, embedder.dimension, chunks, vectors, {}, name)


def ndcg_at_10(ranked: list[str], judged: dict[str, int]) -> float:
    gains = [judged.get(doc, 0) for doc in ranked[:10]]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_10(ranked: list[str], judged: dict[str, int]) -> float:
    relevant = {doc for doc, gain in judged.items() if gain > 0}
    return len(relevant & set(ranked[:10])) / len(relevant) if relevant else 0.0


class Scored(NamedTuple):
    """One set's queries, each with its judgements and every document's BM25 and cosine score."""

    ids: list[str]
    queries: list[tuple[dict[str, int], npt.NDArray[np.float32], npt.NDArray[np.float32]]]


def score_set(name: str, embedder: Embedding, cache: Path | None) -> tuple[Scored, KnowledgeIndex]:
    docs, queries, qrels = load_set(name)
    index = build_index(docs, embedder, name, cache)
    retriever = HybridRetriever(index, embedder)
    rows = []
    for query in queries:
        judged = qrels.get(query._id, {})
        if any(gain > 0 for gain in judged.values()):
            similarity = index.vectors @ embedder.embed_sync([query.text])[0]
            rows.append((judged, retriever.lexical_scores(query.text), similarity))
    return Scored([chunk.source for chunk in index.chunks], rows), index


def evaluate(scored: Scored, fusion: Fusion, **options: Any) -> tuple[float, float]:
    """Mean recall@10 and nDCG@10 of `fuse(..., fusion, **options)` over the set's judged queries."""
    recalls, ndcgs = [], []
    for judged, lexical, similarity in scored.queries:
        order, _ = fuse(lexical, similarity, fusion, **options)
        ranked = [scored.ids[number] for number in order[:10].tolist()]
        recalls.append(recall_at_10(ranked, judged))
        ndcgs.append(ndcg_at_10(ranked, judged))
    return statistics.fmean(recalls), statistics.fmean(ndcgs)


GRID: list[tuple[str, Fusion, dict[str, Any]]] = [
    *((f"zscore w={w / 10:.1f}", "zscore", {"weight": w / 10}) for w in range(1, 10)),
    *((f"convex w={w / 10:.1f}", "convex", {"weight": w / 10}) for w in range(1, 10)),
    *((f"rrf k={k} w={w / 10:.1f}", "rrf", {"weight": w / 10, "rrf_k": k}) for k in (10, 60) for w in range(2, 9, 2)),
]
"""The fusions tried when tuning: standard scores and min-max convex at each lexical weight, weighted RRF."""


def tune(scored: Scored) -> tuple[str, Fusion, dict[str, Any]]:
    """The grid's best fusion by nDCG@10 on `scored`."""
    return max(GRID, key=lambda entry: evaluate(scored, entry[1], **entry[2])[1])


async def latency(embedder: Embedding, indexes: list[KnowledgeIndex], rounds: int) -> dict[str, list[float]]:
    one_blas_thread()  # as `turnout serve` runs it
    queries = [query for name in SETS for query in load_set(name)[1]]
    chunks = tuple(chunk for index in indexes for chunk in index.chunks)
    vectors = np.concatenate([index.vectors for index in indexes])
    index = KnowledgeIndex(Path("both"), embedder.name, embedder.dimension, chunks, vectors, {}, "both")
    retrievers = {fusion: HybridRetriever(index, embedder, fusion) for fusion in get_args(Fusion)}
    timings: dict[str, list[float]] = {fusion: [] for fusion in retrievers}
    for _ in range(rounds):
        for query in queries:
            for fusion, retriever in retrievers.items():
                started = time.perf_counter()
                await retriever.search(query.text, top_k=10)
                timings[fusion].append((time.perf_counter() - started) * 1000)
    print(f"\nlatency: query embedding + search, {len(index.chunks):,} chunks, {len(queries)} queries x {rounds}")
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="latency repetitions of every query")
    parser.add_argument("--model", default=LocalEmbedder.NAME, choices=list(LOCAL_MODELS), help="the local embedder")
    parser.add_argument("--dimension", type=int, default=256, help="its dimension")
    parser.add_argument("--cache", type=Path, help="keep the corpora's vectors in this folder")
    args = parser.parse_args()
    if not DATASETS.is_dir():
        print(f"The retrieval data sets are absent: {DATASETS} does not exist. Nothing measured.")
        return 2
    embedder = local_embedder(args.model, args.dimension)
    print(f"embedder: {embedder.name} ({embedder.dimension} dimensions); means over each set's judged queries")
    scored, indexes = {}, []
    for name in SETS:
        scored[name], index = score_set(name, embedder, args.cache)
        indexes.append(index)
    modes: list[tuple[str, Fusion, dict[str, Any]]] = [
        ("lexical", "lexical", {}),
        ("dense", "dense", {}),
        ("convex 0.3", "convex", {}),
        ("rrf", "rrf", {}),
        (f"zscore {WEIGHTS['zscore']}", "zscore", {}),
    ]
    print(f"{'set':10} {'metric':10} " + " ".join(f"{label:>14}" for label, _, _ in modes))
    for name in SETS:
        results = [evaluate(scored[name], fusion, **options) for _, fusion, options in modes]
        for position, metric in enumerate(("recall@10", "nDCG@10")):
            print(f"{name:10} {metric:10} " + " ".join(f"{result[position]:14.3f}" for result in results))
    for tuned_on, held_out in (SETS, SETS[::-1]):
        label, fusion, options = tune(scored[tuned_on])
        on = evaluate(scored[tuned_on], fusion, **options)
        out = evaluate(scored[held_out], fusion, **options)
        print(
            f"tuned on {tuned_on}: {label} (nDCG@10 {on[1]:.3f} there); on {held_out}, not tuned on: "
            f"recall@10 {out[0]:.3f}, nDCG@10 {out[1]:.3f}"
        )
    timings = asyncio.run(latency(embedder, indexes, args.rounds))
    for mode, values in timings.items():
        p50, p95 = np.percentile(values, 50), np.percentile(values, 95)
        print(f"  {mode:8} p50 {p50:6.3f} ms   p95 {p95:6.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
