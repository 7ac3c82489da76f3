"""The policy file's knowledge settings: `kind: rag` routes and the `embedder`, checked, with their indexes loaded.

```yaml
embedder: {upstream: openai, model: text-embedding-3-small, dimension: 1536}   # default: the local model
routes:
  docs: {kind: rag, index: ./knowledge-index, answer_with: support-ft, top_k: 4, min_score: 0.2, context_tokens: 1500}
```

An index path is relative to the policy file. Every RAG route's index is loaded when the file is, and
checked against the embedder: a missing index, or one made by another model or dimension, makes the file
invalid, so `turnout check` fails on it, `turnout serve` refuses to start, and a reload keeps the
running policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from proxy.config.sections import EmbedderSettings, RagSettings
from routes.knowledge.embedding import LocalEmbedder
from routes.knowledge.index import KnowledgeIndex, KnowledgeIndexError

__all__ = ["KnowledgeError", "embedder_identity", "load_indexes"]


class KnowledgeError(Exception):
    """A RAG route or the embedder is misconfigured, or an index is missing or mismatched."""

    def __init__(self, message: str, *, route: str | None = None) -> None:
        super().__init__(message)
        self.route = route
        """The RAG route at fault (None: the embedder)."""


def embedder_identity(settings: EmbedderSettings) -> tuple[str, int]:
    """The name and dimension the configured embedder records in an index, without loading it.

    Raises:
        KnowledgeError: an upstream embedder without a `model`, or a local one of another dimension.
    """
    if settings.upstream is None:
        if settings.model is not None:
            raise KnowledgeError("embedder: `model` needs an `upstream` (without one, the local model embeds)")
        if settings.dimension not in (64, 128, 256):
            raise KnowledgeError(f"embedder: the local model has 64, 128 or 256 dimensions, not {settings.dimension}")
        return LocalEmbedder.NAME, settings.dimension
    if settings.model is None:
        raise KnowledgeError(f"embedder: upstream '{settings.upstream}' needs a `model` (e.g. text-embedding-3-small)")
    return settings.model, settings.dimension


def load_indexes(
    rag: Mapping[str, RagSettings], embedder: EmbedderSettings, base: Path
) -> dict[str, tuple[Path, KnowledgeIndex]]:
    """Each RAG route's index (its resolved directory, and the index in memory), checked against the embedder.

    Raises:
        KnowledgeError: an index is missing, unreadable, or made by another embedder; names the route.
    """
    name, dimension = embedder_identity(embedder)
    loaded: dict[Path, KnowledgeIndex] = {}
    indexes = {}
    for route, settings in rag.items():
        directory = (base / settings.index).resolve()
        try:
            index = loaded.get(directory) or KnowledgeIndex.load(directory)
        except KnowledgeIndexError as exc:
            raise KnowledgeError(f"route '{route}': {exc}", route=route) from exc
        if (index.embedder, index.dimension) != (name, dimension):
            raise KnowledgeError(
                f"route '{route}': the index in {directory} was made by {index.embedder} ({index.dimension} "
                f"dimensions), not by the configured embedder {name} ({dimension} dimensions); "
                "re-index with the configured embedder",
                route=route,
            )
        loaded[directory] = index
        indexes[route] = directory, index
    return indexes
