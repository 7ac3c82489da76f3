"""`OpenAIEmbedder`: an `Embedder` on an OpenAI-compatible upstream's `POST /embeddings` (text-embedding-3-small…).

It posts through the upstream's shared, pooled session (the same `Upstream` chat routes use), so its
errors are mapped like theirs. The rows it gets back are normalised to unit length. Every call returns the
tokens the upstream billed with its vectors, so that cost accounting can count what the RAG route and the
meaning-based policy conditions spend on embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from proxy.wire.errors import UpstreamError
from proxy.wire.schemas import TokenCount
from routes.knowledge.embedding import Embedded, Spent, Vectors, normalise
from routes.upstream import Upstream, UpstreamPath

__all__ = ["OpenAIEmbedder"]

_BATCH = 512
"""Inputs per request (OpenAI accepts up to 2,048)."""
_PATH = UpstreamPath("embeddings")


class _Item(msgspec.Struct):
    embedding: list[float]
    index: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: TokenCount = 0
    total_tokens: TokenCount = 0


class _Response(msgspec.Struct):
    data: list[_Item]
    usage: _Usage | None = None


_DECODE = msgspec.json.Decoder(_Response)


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible upstream's `/embeddings`, with a fixed model and dimension."""

    __slots__ = ("_dimension", "_timeout", "model", "upstream")

    def __init__(self, upstream: Upstream, model: str, dimension: int, *, timeout: float = 30.0) -> None:
        self.upstream = upstream
        self.model = model
        self._dimension = dimension
        self._timeout = upstream.timeout(timeout)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(upstream={self.upstream.name!r}, model={self.model!r}, dimension={self._dimension})"

    @property
    def name(self) -> str:
        """The model's name, e.g. `text-embedding-3-small`."""
        return self.model

    @property
    def dimension(self) -> int:
        """The configured dimension (asked of the upstream with `dimensions`)."""
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """One unit row per text, in order (in batches of 512), and the tokens the upstream billed.

        Raises:
            ProxyError: the upstream failed, or sent vectors of another dimension.
        """
        batches = [await self._batch(list(texts[at : at + _BATCH])) for at in range(0, len(texts), _BATCH)]
        if not batches:
            return Embedded(np.zeros((0, self._dimension), dtype=np.float32))
        tokens = sum(tokens for _, tokens in batches)
        return Embedded(normalise(np.concatenate([rows for rows, _ in batches])), Spent(self.model, tokens))

    async def _batch(self, texts: list[str]) -> tuple[Vectors, int]:
        body = msgspec.json.encode({"model": self.model, "input": texts, "dimensions": self._dimension})
        content, _ = await self.upstream.post(_PATH, body, {}, self._timeout)
        try:  # typed: every number kept is checked; skipping the rest recurses as deep as it nests
            response = _DECODE.decode(content)
        except (msgspec.DecodeError, RecursionError) as exc:
            reason = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc).replace(" - at ", " at ")
            message = f"The upstream '{self.upstream.name}' sent embeddings that Turnout cannot read: {reason}."
            raise UpstreamError(message) from None
        items = sorted(response.data, key=lambda item: item.index)
        vectors = np.array([item.embedding for item in items], dtype=np.float32)
        if vectors.shape != (len(texts), self._dimension):
            raise UpstreamError(
                f"The upstream '{self.upstream.name}' sent embeddings of shape {vectors.shape} "
                f"for {len(texts)} texts of {self._dimension} dimensions."
            )
        return vectors, response.usage.total_tokens if response.usage is not None else 0
