"""Knowledge wiring: the embedder, the retrievers, and `SemanticScorer`, which computes meaning-based policy features.

`build_knowledge()` turns a checked deployment into what requests use: one embedder for the whole file
(the local model, which `LocalEmbedders` loads once for the server's resources or the command line, or
an `OpenAIEmbedder` on a configured upstream), a `HybridRetriever` over each route's knowledge index
(`routes.registry.build_routes` builds the RAG routes over them), and, when the rules use `similar_to` or
`retrieval_score`, a `SemanticScorer`. The scorer embeds every example list once (`prepare`, at load), then
per request embeds the last user message once and derives every similarity and retrieval score from that
one vector (`policies.semantic` says why this happens outside the engine).

Embedding tokens: what an upstream embedder bills comes back with its vectors (`Spent`). `features`
embeds the request's `Question`, which keeps that bill for the request (the RAG route's retrieval adds to
it), and `prepare` returns what embedding the examples cost. Every embedder is a `RememberingEmbedder`,
so a request's question is embedded (and billed) once, however many of the rules, the RAG route and the
semantic cache need it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import numpy as np

from policies import SemanticFeatures, SemanticNeeds
from proxy.config.policyfile import Deployment
from proxy.config.rag import UPSTREAM_DIMENSION
from proxy.config.settings import Settings, UpstreamSettings
from routes import HybridRetriever, OpenAIEmbedder, Upstream, UpstreamTimeouts, new_session
from routes.knowledge.embedding import (
    Embedder,
    Question,
    RememberingEmbedder,
    Spent,
    Vectors,
    local_embedder,
    local_identity,
)

__all__ = ["Knowledge", "LocalEmbedders", "SemanticScorer", "build_knowledge", "open_knowledge", "open_upstream"]


class LocalEmbedders:
    """The local model, loaded on first use (a fraction of a second) and then shared by all that embed locally.

    One per dimension asked for (a shorter prefix is another model), each with one memory: the rules,
    the RAG routes and the semantic cache embed a question once between them, across reloads too. The
    server's belong to its resources (`proxy.lifespan.open_resources`); the command line makes its own.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, int], RememberingEmbedder] = {}

    def get(self, model: str | None = None, dimension: int | None = None) -> RememberingEmbedder:
        """The local `model` (None: the default) with `dimension` dimensions, loaded now on its first use."""
        identity = local_identity(model, dimension)
        embedder = self._loaded.get(identity)
        if embedder is None:
            embedder = self._loaded[identity] = RememberingEmbedder(local_embedder(*identity))
        return embedder


class SemanticScorer:
    """Computes `SemanticFeatures` for a request: one embedding, then similarities and retrieval scores."""

    def __init__(self, needs: SemanticNeeds, embedder: Embedder, retrievers: Mapping[str, HybridRetriever]) -> None:
        self.needs = needs
        self.embedder = embedder
        self._retrievers = {name: retrievers[name] for name in needs.retrieval_routes}
        self._examples: dict[tuple[str, ...], Vectors] = {}
        self._lock = asyncio.Lock()

    async def prepare(self) -> Spent | None:
        """Embed every example list (once; later calls return at once); what that was billed."""
        async with self._lock:
            missing = [examples for examples in self.needs.examples if examples not in self._examples]
            if not missing:
                return None
            texts = [text for examples in missing for text in examples]
            vectors, spent = await self.embedder.embed(texts)
            start = 0
            for examples in missing:
                self._examples[examples] = vectors[start : start + len(examples)]
                start += len(examples)
            return spent

    async def features(self, question: Question) -> SemanticFeatures:
        """The meaning-based features of a request that asks `question` (its vector embedded once).

        The examples are embedded first if neither the load nor an earlier request could: this request pays.
        """
        question.charge(await self.prepare())
        vector = await question.vector(self.embedder)
        similarity = {}
        for examples, matrix in self._examples.items():
            scores = matrix @ vector
            best = int(np.argmax(scores))
            similarity[examples] = (float(scores[best]), examples[best])
        retrieval = {name: retriever.best_similarity(vector) for name, retriever in self._retrievers.items()}
        return SemanticFeatures(similarity=similarity, retrieval=retrieval)


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What a deployment's knowledge settings build."""

    retrievers: dict[str, HybridRetriever]
    """The retriever over each route's knowledge index, by route name."""
    scorer: SemanticScorer | None


def _embedder(deployment: Deployment, upstreams: Mapping[str, Upstream], local: LocalEmbedders) -> Embedder:
    settings = deployment.embedder
    if settings.upstream is None:
        return local.get(settings.model, settings.dimension)
    model = settings.model or ""  # checked at load: an upstream embedder has a model
    dimension = settings.dimension or UPSTREAM_DIMENSION
    return RememberingEmbedder(OpenAIEmbedder(upstreams[settings.upstream], model, dimension))


def build_knowledge(
    deployment: Deployment,
    upstreams: Mapping[str, Upstream],
    *,
    local: LocalEmbedders,
) -> Knowledge:
    """The embedder, retrievers and scorer of `deployment` (nothing is built when nothing embeds).

    `local` holds the local model, for a deployment without an upstream embedder.
    """
    if not deployment.uses_embedder:
        return Knowledge(retrievers={}, scorer=None)
    embedder = _embedder(deployment, upstreams, local)
    retrievers = {name: HybridRetriever(index, embedder) for name, index in deployment.indexes.items()}
    needs = deployment.policy.semantic_needs if deployment.policy is not None else SemanticNeeds()
    scorer = SemanticScorer(needs, embedder, retrievers) if needs else None
    return Knowledge(retrievers=retrievers, scorer=scorer)


@contextlib.asynccontextmanager
async def open_knowledge(settings: Settings) -> AsyncIterator[Knowledge]:
    """`build_knowledge` outside the server (`turnout explain`, `turnout test`): its own session to the embedder."""
    deployment = settings.deployment
    async with contextlib.AsyncExitStack() as stack:
        upstreams = {}
        name = deployment.embedder.upstream
        if deployment.uses_embedder and name is not None:
            upstreams[name] = await stack.enter_async_context(open_upstream(settings.upstreams[name]))
        yield build_knowledge(deployment, upstreams, local=LocalEmbedders())


@contextlib.asynccontextmanager
async def open_upstream(upstream: UpstreamSettings) -> AsyncIterator[Upstream]:
    """An `Upstream` with a small session of its own, closed on exit (for the command line)."""
    timeout = upstream.timeout
    session = new_session(UpstreamTimeouts(timeout.connect, timeout.read, timeout.total), max_connections=8)
    try:
        yield Upstream(
            upstream.name, upstream.base_url, upstream.api_key.reveal() if upstream.api_key else None, session
        )
    finally:
        await session.close()
