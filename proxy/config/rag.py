"""The policy file's knowledge settings: the `embedder`, checked, and the routes' knowledge indexes, loaded.

```yaml
embedder: {upstream: openai, model: text-embedding-3-small, dimension: 1536}   # default: the local model
embedder: {model: minilm/all-MiniLM-L6-v2}     # another local model (`LOCAL_MODELS`), at its own dimension
routes:
  docs: {kind: rag, index: ./knowledge-index, answer_with: support-ft, top_k: 4, min_score: 0.2, context_tokens: 1500}
```

An index path is relative to the policy file. Every index a route searches is loaded when the file is
(its kind's check asks for it, `routes.kind.CheckContext.load_index`), and checked against the embedder:
a missing index, or one made by another model or dimension, makes the file invalid, so `turnout check`
fails on it, `turnout serve` refuses to start, and a reload keeps the running policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from proxy.config.sections import EmbedderSettings
from proxy.config.yamlsource import Key, YamlDocument
from routes.knowledge.embedding import local_identity
from routes.knowledge.index import KnowledgeIndex, KnowledgeIndexError

__all__ = ["UPSTREAM_DIMENSION", "IndexLoader", "embedder_identity"]

UPSTREAM_DIMENSION = 256
"""An upstream embedder's dimension when the file gives none (asked of the upstream with `dimensions`)."""


def embedder_identity(document: YamlDocument, settings: EmbedderSettings) -> tuple[str, int]:
    """The name and dimension the configured embedder records in an index, without loading it.

    Raises:
        ConfigError: an upstream embedder without a `model`, or a local one of another dimension.
    """
    if settings.upstream is None:
        try:
            return local_identity(settings.model, settings.dimension)
        except ValueError as exc:
            raise document.error(("embedder",), f"embedder: {exc} (a model on an upstream needs `upstream`)") from None
    if settings.model is None:
        message = f"embedder: upstream '{settings.upstream}' needs a `model` (e.g. text-embedding-3-small)"
        raise document.error(("embedder",), message)
    return settings.model, settings.dimension or UPSTREAM_DIMENSION


class IndexLoader:
    """Loads the knowledge indexes a policy file's routes search, each directory once, checked against the embedder."""

    def __init__(self, document: YamlDocument, embedder: tuple[str, int]) -> None:
        self._document = document
        self._embedder = embedder
        self._loaded: dict[Path, KnowledgeIndex] = {}

    def load(self, route: str, directory: str, where: Sequence[Key]) -> KnowledgeIndex:
        """The index in `directory` (relative to the policy file) that `route` searches; `where` names the setting.

        Raises:
            ConfigError: the index is missing, unreadable, or made by another embedder; names the route.
        """
        resolved = (Path(self._document.path).parent / directory).resolve()
        try:
            index = self._loaded.get(resolved) or KnowledgeIndex.load(resolved)
        except KnowledgeIndexError as exc:
            raise self._document.error(where, f"route '{route}': {exc}") from exc
        name, dimension = self._embedder
        if (index.embedder, index.dimension) != (name, dimension):
            raise self._document.error(
                where,
                f"route '{route}': the index in {resolved} was made by {index.embedder} ({index.dimension} "
                f"dimensions), not by the configured embedder {name} ({dimension} dimensions); "
                "re-index with the configured embedder",
            )
        self._loaded[resolved] = index
        return index
