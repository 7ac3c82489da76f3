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
from policies.features import NearestKey, RouteScore
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

__all__ = [
    "Knowledge",
    "LocalEmbedders",
    "SemanticScorer",
    "build_knowledge",
    "calibrated_threshold",
    "open_knowledge",
    "open_upstream",
    "top_k_mean",
]


def top_k_mean(similarities: np.ndarray, k: int) -> np.ndarray:
    """The mean of the `k` highest values of each row (of all of them when a row has fewer)."""
    k = min(k, similarities.shape[-1])
    return np.asarray(-np.sort(-similarities, axis=-1)[..., :k].mean(axis=-1))


def calibrated_threshold(examples: Vectors, k: int, quantile: float) -> float:
    """A route's threshold from its own examples, leave-one-out.

    Each example is scored against the route's other examples as a message is (the mean of the `k` best
    similarities); the threshold is the `quantile` of those scores.
    """
    if len(examples) < 2:
        return 1.0  # nothing to leave one out of; the loader asks for a threshold of its own then
    gram = examples @ examples.T
    np.fill_diagonal(gram, -np.inf)
    return float(np.quantile(top_k_mean(gram, min(k, len(examples) - 1)), quantile))  # the -inf diagonal sorts last


class _Routes:
    """A `nearest` rule's routes, embedded and calibrated, scored for a request with one matrix product.

    Every example vector is one row of `matrix`; `slots` places each route's rows in a table padded to
    the longest list, so the routes' top-k means come from one sort of that table.
    """

    def __init__(self, key: NearestKey, matrices: list[Vectors]) -> None:
        self.routes = tuple(route for route, _ in key.routes)
        self.examples = tuple(examples for _, examples in key.routes)
        self.calibrated = tuple(calibrated_threshold(m, key.k, key.calibration) for m in matrices)
        self.matrix = np.vstack(matrices)
        widest = max(len(m) for m in matrices)
        counts = np.array([len(m) for m in matrices])
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        self.slots = np.minimum(starts[:, None] + np.arange(widest), len(self.matrix) - 1)
        self.padding = np.arange(widest) >= counts[:, None]
        self.k = min(key.k, widest)
        self.divisor = np.minimum(counts, key.k)

    def scores(self, vector: Vectors) -> tuple[RouteScore, ...]:
        """Every route's score for the message `vector`, best first."""
        table = np.where(self.padding, -np.inf, (self.matrix @ vector)[self.slots])
        closest = np.argmax(table, axis=1)
        best = -np.sort(-table, axis=1)[:, : self.k]
        means = np.where(np.isfinite(best), best, 0).sum(axis=1) / self.divisor
        order = np.argsort(-means, kind="stable")
        return tuple(
            RouteScore(self.routes[i], float(means[i]), self.calibrated[i], self.examples[i][int(closest[i])])
            for i in order.tolist()
        )


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
        self._nearest: dict[NearestKey, _Routes] = {}
        self._lock = asyncio.Lock()

    async def prepare(self) -> Spent | None:
        """Embed every example list (once; later calls return at once); what that was billed."""
        async with self._lock:
            missing = [examples for examples in self.needs.examples if examples not in self._examples]
            nearest = [key for key in self.needs.nearest if key not in self._nearest]
            lists = [*missing, *(examples for key in nearest for _, examples in key.routes)]
            if not lists:
                return None
            vectors, spent = await self.embedder.embed([text for examples in lists for text in examples])
            embedded = []
            start = 0
            for examples in lists:
                embedded.append(vectors[start : start + len(examples)])
                start += len(examples)
            for examples, matrix in zip(missing, embedded, strict=False):
                self._examples[examples] = matrix
            rest = iter(embedded[len(missing) :])
            for key in nearest:
                self._nearest[key] = _Routes(key, [next(rest) for _ in key.routes])
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
        nearest = {key: routes.scores(vector) for key, routes in self._nearest.items()}
        return SemanticFeatures(similarity=similarity, retrieval=retrieval, nearest=nearest)


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
