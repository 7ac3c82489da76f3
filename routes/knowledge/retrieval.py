"""`Retriever` Protocol, `Passage`; `HybridRetriever`: lexical (BM25) and dense (cosine) search fused into one ranking.

Both searches run over the whole in-memory index: BM25 adds up precomputed per-term arrays
(`routes.knowledge.lexical`), the dense side is one matrix-vector product of the unit rows with the query's unit
vector. The two are fused (`fuse`), the lexical side weighing `weight` and the dense side the rest:

- `zscore` (the default): each list's scores become standard scores over every chunk (how many
  deviations above this query's mean), then are mixed. A query's whole score distribution sets the
  scale, not its few best, so one list's outlier does not squash the other's.
- `rrf` (reciprocal rank fusion, k = 60): over the best `CANDIDATES` of each list, a passage scores
  1 / (60 + its rank) in each, weighted (0.5: the classic, unweighted sum).
- `convex`: over the same candidates, each list's scores are scaled to [0, 1] (min-max), then mixed.

`tests/bench/retrieval.py` measures them against lexical and dense alone (README, "Knowledge and the
RAG route"). The default fusion and weight were chosen on one BEIR set (msmarco) and are reported on
the other (dbpedia), which they were not tuned on.

A passage's `score` orders the results and means nothing across queries; its `similarity` (the cosine
between the query and the passage) is absolute, so `min_score` thresholds and the policies'
`retrieval_score` condition use that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from routes.knowledge.embedding import Embedder, Spent, Vectors, check_compatible
from routes.knowledge.index import KnowledgeIndex
from routes.knowledge.lexical import LexicalIndex

__all__ = [
    "CANDIDATES",
    "WEIGHTS",
    "Fusion",
    "HybridRetriever",
    "Passage",
    "Retrieved",
    "Retriever",
    "fuse",
    "one_blas_thread",
]

Fusion = Literal["zscore", "rrf", "convex", "lexical", "dense"]
CANDIDATES = 100
"""How many of each list's best go into the fusion."""
RRF_K = 60
WEIGHTS: dict[Fusion, float] = {"zscore": 0.2, "rrf": 0.5, "convex": 0.3, "lexical": 1.0, "dense": 0.0}
"""The lexical side's default weight in each fusion (zscore's chosen on msmarco; convex's as it shipped before)."""


def one_blas_thread() -> None:
    """Run this process's BLAS (the dense search's matrix-vector product) on one thread.

    A server runs requests side by side, not one product on every core. Spread over two threads, the
    product for 10,000 chunks waited for a busy core: 6.6 ms instead of 0.55 ms on this 2-core machine
    with the other core loaded (`tests/bench/retrieval.py` runs the same way).
    """
    threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk and where it comes from."""

    source: str
    """The file, as the index names it."""
    heading: str
    """Its heading path ("Billing > Refunds"), or ""."""
    position: int
    """The chunk's number within its file."""
    text: str
    score: float
    """The fused ranking score (only comparable within one query)."""
    similarity: float
    """Cosine similarity between the query and the passage, in [-1, 1]."""


class Retrieved(NamedTuple):
    """What a search found, and what embedding its query was billed (None: nothing)."""

    passages: list[Passage]
    spent: Spent | None = None


class Retriever(Protocol):
    """Finds the passages of a knowledge index that answer a query."""

    @property
    def version(self) -> str:
        """The index's version: changes whenever what it can return changes."""
        ...

    async def search(self, query: str, *, top_k: int, min_score: float = -1.0) -> Retrieved:
        """The `top_k` best passages for `query` whose similarity is at least `min_score`, best first."""
        ...


def _top(scores: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.intp]:
    """Indices of the `count` highest scores, highest first."""
    if count >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, count)[:count]
    return part[np.argsort(-scores[part], kind="stable")]


def _scaled(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Min-max scaled to [0, 1] over `values`."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        return np.ones_like(values) if high > 0 else np.zeros_like(values)
    result: npt.NDArray[np.float32] = (values - low) / (high - low)
    return result


def _standard(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Standard scores over every chunk: how many deviations above this query's mean score (0 if all tie)."""
    deviation = float(values.std())
    if deviation < 1e-9:
        return np.zeros_like(values)
    result: npt.NDArray[np.float32] = ((values - values.mean()) / deviation).astype(np.float32, copy=False)
    return result


def fuse(
    lexical: npt.NDArray[np.float32],
    similarity: npt.NDArray[np.float32],
    fusion: Fusion = "zscore",
    *,
    weight: float | None = None,
    rrf_k: int = RRF_K,
    candidates: int = CANDIDATES,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Chunk numbers, best first, with their fused scores, from every chunk's BM25 and cosine scores.

    `weight` is the lexical side's share (the dense side has the rest; None: the fusion's `WEIGHTS`).
    """
    weight = WEIGHTS[fusion] if weight is None else weight
    if fusion == "dense":
        order = _top(similarity, candidates)
        return order, similarity[order]
    if fusion == "lexical":
        order = _top(lexical, candidates)
        return order, lexical[order]
    if fusion == "zscore":
        mixed = weight * _standard(lexical) + (1 - weight) * _standard(similarity)
        order = _top(mixed, candidates)
        return order, mixed[order]
    by_dense = _top(similarity, candidates)
    by_lexical = _top(lexical, candidates)
    by_lexical = by_lexical[lexical[by_lexical] > 0]  # a chunk without a query term is no lexical hit
    pool = np.union1d(by_dense, by_lexical)
    if fusion == "rrf":
        fused = np.zeros(len(similarity), dtype=np.float32)
        for ranking, share in ((by_dense, 1 - weight), (by_lexical, weight)):
            fused[ranking] += 2 * share / (rrf_k + 1 + np.arange(len(ranking), dtype=np.float32))
        mixed = fused[pool]
    else:
        mixed = weight * _scaled(lexical[pool]) + (1 - weight) * _scaled(similarity[pool])
    order = np.argsort(-mixed, kind="stable")
    ranked: npt.NDArray[np.float32] = mixed[order].astype(np.float32)
    return pool[order], ranked


class HybridRetriever:
    """Hybrid search over one `KnowledgeIndex`, with the embedder that made its vectors."""

    __slots__ = ("_embedder", "_lexical", "distinct", "fusion", "index", "weight")

    def __init__(
        self,
        index: KnowledgeIndex,
        embedder: Embedder,
        fusion: Fusion = "zscore",
        *,
        weight: float | None = None,
        distinct: bool = True,
    ) -> None:
        """Build the in-memory search structures; `distinct`: at most one passage (the best) per document.

        Raises:
            EmbedderMismatchError: the index was made by another embedder than `embedder`.
        """
        check_compatible(index.embedder, index.dimension, embedder)
        self.index = index
        self.fusion: Fusion = fusion
        self.weight = WEIGHTS[fusion] if weight is None else weight
        self.distinct = distinct
        self._embedder = embedder
        self._lexical = LexicalIndex([chunk.terms for chunk in index.chunks])

    @property
    def version(self) -> str:
        """The index's version."""
        return self.index.version

    @property
    def embedder(self) -> Embedder:
        """The embedder queries must be embedded with (the index's)."""
        return self._embedder

    async def search(self, query: str, *, top_k: int, min_score: float = -1.0) -> Retrieved:
        """Embed `query`, then `search_with` it; with what embedding it was billed."""
        if not self.index.chunks or not query.strip():
            return Retrieved([])
        embedded = await self._embedder.embed([query])
        passages = self.search_with(query, embedded.vectors[0], top_k=top_k, min_score=min_score)
        return Retrieved(passages, embedded.spent)

    def lexical_scores(self, query: str) -> npt.NDArray[np.float32]:
        """Every chunk's BM25 score for `query`."""
        return self._lexical.scores(query)

    def best_similarity(self, vector: Vectors) -> float | None:
        """The highest cosine similarity of any passage to the query's `vector` (None for an empty index)."""
        if not self.index.chunks:
            return None
        best: float = (self.index.vectors @ vector).max().item()
        return best

    def search_with(self, query: str, vector: Vectors, *, top_k: int, min_score: float = -1.0) -> list[Passage]:
        """The `top_k` best passages for `query` (and its embedding `vector`), with similarity >= `min_score`.

        With `distinct`, a passage of a document already listed is left out (its best passage stands for it).
        """
        if not self.index.chunks:
            return []
        similarity = self.index.vectors @ vector
        lexical = self._lexical.scores(query) if self.fusion != "dense" else similarity
        candidates = max(CANDIDATES, 4 * top_k) if self.distinct else CANDIDATES
        ranked, scores = fuse(lexical, similarity, self.fusion, weight=self.weight, candidates=candidates)
        passages: list[Passage] = []
        listed: set[str] = set()
        for number, score in zip(ranked.tolist(), scores.tolist(), strict=True):
            chunk = self.index.chunks[number]
            if similarity[number] < min_score or (self.distinct and chunk.source in listed):
                continue
            listed.add(chunk.source)
            passages.append(
                Passage(chunk.source, chunk.heading, chunk.position, chunk.text, score, float(similarity[number]))
            )
            if len(passages) == top_k:
                break
        return passages
