"""Retrieval quality and latency: `python -m tests.bench.retrieval` (also run by `make bench`).

Quality: on the two BEIR sets in `../shared/datasets/` (msmarco, dbpedia; 5,000 documents and 50
queries each), every document becomes one chunk (its title as the heading), embedded with the local
model, and the 50 queries are ranked by lexical (BM25), dense (cosine) and the two hybrid fusions
(`rrf`, `convex`). Printed side by side: recall@10 and nDCG@10 (graded relevance, as BEIR computes it).

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
from pathlib import Path
from typing import get_args

import msgspec
import numpy as np

from routes.knowledge.embedding import LocalEmbedder
from routes.knowledge.index import ChunkRecord, KnowledgeIndex
from routes.knowledge.lexical import term_counts
from routes.knowledge.retrieval import Fusion, HybridRetriever, one_blas_thread

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
SETS = ("msmarco", "dbpedia")


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


def build_index(docs: list[_Doc], embedder: LocalEmbedder, name: str) -> KnowledgeIndex:
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
    vectors = embedder.embed_sync([f"{doc.title}\n{doc.text}" if doc.title else doc.text for doc in docs])
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


def quality(name: str, embedder: LocalEmbedder) -> dict[str, tuple[float, float]]:
    docs, queries, qrels = load_set(name)
    index = build_index(docs, embedder, name)
    results = {}
    for fusion in get_args(Fusion):
        retriever = HybridRetriever(index, embedder, fusion)
        recalls, ndcgs = [], []
        for query in queries:
            judged = qrels.get(query._id, {})
            if not any(gain > 0 for gain in judged.values()):
                continue
            vector = embedder.embed_sync([query.text])[0]
            ranked = [p.source for p in retriever.search_with(query.text, vector, top_k=10)]
            recalls.append(recall_at_10(ranked, judged))
            ndcgs.append(ndcg_at_10(ranked, judged))
        results[fusion] = (statistics.fmean(recalls), statistics.fmean(ndcgs))
    return results


async def latency(embedder: LocalEmbedder, rounds: int) -> dict[str, list[float]]:
    one_blas_thread()  # as `turnout serve` runs it
    docs, queries = [], []
    for name in SETS:
        set_docs, set_queries, _ = load_set(name)
        docs += set_docs
        queries += set_queries
    index = build_index(docs, embedder, "both")
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
    args = parser.parse_args()
    if not DATASETS.is_dir():
        print(f"The retrieval data sets are absent: {DATASETS} does not exist. Nothing measured.")
        return 2
    embedder = LocalEmbedder()
    modes = get_args(Fusion)
    print(f"embedder: {embedder.name} ({embedder.dimension} dimensions); means over each set's judged queries")
    print(f"{'set':10} {'metric':10} " + " ".join(f"{mode:>8}" for mode in modes))
    for name in SETS:
        results = quality(name, embedder)
        for position, metric in enumerate(("recall@10", "nDCG@10")):
            print(f"{name:10} {metric:10} " + " ".join(f"{results[mode][position]:8.3f}" for mode in modes))
    timings = asyncio.run(latency(embedder, args.rounds))
    for mode, values in timings.items():
        p50, p95 = np.percentile(values, 50), np.percentile(values, 95)
        print(f"  {mode:8} p50 {p50:6.3f} ms   p95 {p95:6.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
