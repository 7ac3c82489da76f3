"""Every `Retriever` passes the same tests: `HybridRetriever` with each fusion, over indexes made by each embedder.

The index is the shipped example knowledge (`policies/examples/knowledge`), added afresh with the local
model or with the OpenAI embedder on the simulated upstream (loopback), whose vectors share directions
only where texts share words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import get_args

import pytest

from routes.knowledge.embedders import OpenAIEmbedder
from routes.knowledge.embedding import Embedder, LocalEmbedder
from routes.knowledge.index import KnowledgeIndex
from routes.knowledge.indexer import add_files, expand_paths, remove_files
from routes.knowledge.retrieval import Fusion, HybridRetriever, Passage, Retriever
from routes.simulator.server import SimulatorServer
from routes.upstream import Upstream, UpstreamTimeouts, new_session

KNOWLEDGE = Path(__file__).resolve().parents[2] / "policies" / "examples" / "knowledge"
QUESTIONS = ["When is support open?", "How are refunds paid back?", "How is the parcel shipped?", "password reset"]


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    """The local model, loaded once for this module (about 1.5 s)."""
    return LocalEmbedder(256)


@pytest.fixture(params=["local", "openai"])
async def embedder(
    request: pytest.FixtureRequest, local: LocalEmbedder, simulator: SimulatorServer
) -> AsyncIterator[Embedder]:
    if request.param == "local":
        yield local
        return
    session = new_session(UpstreamTimeouts())
    yield OpenAIEmbedder(Upstream("sim", simulator.base_url, "sk-test", session), "text-embedding-3-small", 64)
    await session.close()


@pytest.fixture
async def index(embedder: Embedder, tmp_path: Path) -> KnowledgeIndex:
    empty = KnowledgeIndex.empty(tmp_path / "index", embedder.name, embedder.dimension)
    built, _ = await add_files(empty, expand_paths([KNOWLEDGE]), embedder)
    return built


@pytest.fixture(params=get_args(Fusion))
def retriever(request: pytest.FixtureRequest, index: KnowledgeIndex, embedder: Embedder) -> Retriever:
    return HybridRetriever(index, embedder, fusion=request.param)


def every_passage(retriever: Retriever, index: KnowledgeIndex, embedder: Embedder) -> HybridRetriever:
    """The same search, with each document's every passage (not only its best)."""
    fusion = retriever.fusion if isinstance(retriever, HybridRetriever) else "convex"
    return HybridRetriever(index, embedder, fusion, distinct=False)


def where(passage: Passage) -> tuple[str, int]:
    return passage.source, passage.position


async def found(retriever: Retriever, query: str, *, top_k: int, min_score: float = -1.0) -> list[Passage]:
    return (await retriever.search(query, top_k=top_k, min_score=min_score)).passages


async def test_a_search_says_what_embedding_its_query_was_billed(retriever: Retriever, embedder: Embedder) -> None:
    spent = (await retriever.search(QUESTIONS[0], top_k=1)).spent
    if isinstance(embedder, LocalEmbedder):
        assert spent is None  # the local model bills nothing
    else:
        assert spent is not None
        assert (spent.model, spent.tokens > 0) == (embedder.name, True)


async def test_at_most_top_k_passages_best_first(retriever: Retriever) -> None:
    for question in QUESTIONS:
        for top_k in (1, 2, 3):
            passages = await found(retriever, question, top_k=top_k)
            assert 1 <= len(passages) <= top_k
            scores = [passage.score for passage in passages]
            assert scores == sorted(scores, reverse=True)


async def test_a_passages_own_words_find_it_first(retriever: Retriever, index: KnowledgeIndex) -> None:
    for chunk in index.chunks:
        [best] = await found(retriever, chunk.text, top_k=1)
        assert where(best) == (chunk.source, chunk.position)


async def test_every_passage_is_the_indexs_own_and_none_comes_twice(
    retriever: Retriever, index: KnowledgeIndex, embedder: Embedder
) -> None:
    every = every_passage(retriever, index, embedder)
    chunks = {(chunk.source, chunk.position): chunk for chunk in index.chunks}
    passages = await found(every, QUESTIONS[0], top_k=len(chunks) + 10)
    assert sorted(map(where, passages)) == sorted(chunks)
    for passage in passages:
        chunk = chunks[where(passage)]
        assert (passage.text, passage.heading) == (chunk.text, chunk.heading)
        assert -1.0 - 1e-5 <= passage.similarity <= 1.0 + 1e-5


async def test_results_are_distinct_documents_each_by_its_best_passage(
    retriever: Retriever, index: KnowledgeIndex, embedder: Embedder
) -> None:
    assert len(index.files) < len(index.chunks)  # some document has more than one passage
    every = every_passage(retriever, index, embedder)
    for question in QUESTIONS:
        passages = await found(retriever, question, top_k=len(index.chunks))
        assert sorted(passage.source for passage in passages) == sorted(index.files)  # each once, none left out
        best: dict[str, tuple[str, int]] = {}
        for passage in await found(every, question, top_k=len(index.chunks)):
            best.setdefault(passage.source, where(passage))
        assert [where(passage) for passage in passages] == list(best.values())


async def test_min_score_keeps_only_passages_at_least_that_similar(
    retriever: Retriever, index: KnowledgeIndex, embedder: Embedder
) -> None:
    retriever = every_passage(retriever, index, embedder)
    everything = await found(retriever, QUESTIONS[1], top_k=100)
    similarities = sorted(passage.similarity for passage in everything)
    middle = similarities[len(similarities) // 2]
    kept = await found(retriever, QUESTIONS[1], top_k=100, min_score=middle)
    assert sorted(map(where, kept)) == sorted(where(p) for p in everything if p.similarity >= middle)
    assert 0 < len(kept) < len(everything)
    assert await found(retriever, QUESTIONS[1], top_k=100, min_score=1.01) == []


async def test_the_version_is_stable_and_changes_with_what_the_index_holds(
    retriever: Retriever, index: KnowledgeIndex, embedder: Embedder
) -> None:
    version = retriever.version
    await found(retriever, QUESTIONS[0], top_k=2)
    assert retriever.version == version
    smaller, _, _ = remove_files(index, [sorted(index.files)[0]])
    assert HybridRetriever(smaller, embedder).version != version


async def test_an_empty_index_finds_nothing(embedder: Embedder, tmp_path: Path) -> None:
    empty = HybridRetriever(KnowledgeIndex.empty(tmp_path, embedder.name, embedder.dimension), embedder)
    assert await found(empty, QUESTIONS[0], top_k=3) == []
