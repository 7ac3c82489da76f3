"""What the simulated `POST /v1/embeddings` reads and writes beyond strings of floats: token arrays, base64 vectors.

An input may be a string, strings, a token array or token arrays (as OpenAI takes them); a token array is
embedded as the text of its ids, so the same tokens always give the same vector. With `encoding_format:
"base64"`, each vector is sent as OpenAI sends it: its little-endian float32 bytes, base64-encoded (what the
SDKs decode, and ask for by default).
"""

from __future__ import annotations

import base64

import numpy as np

__all__ = ["ENCODINGS", "encoded", "input_texts"]

ENCODINGS = frozenset({"float", "base64"})
"""The `encoding_format`s OpenAI answers."""


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(type(item) is int for item in value)


def input_texts(value: object) -> list[str] | None:
    """The texts of an `input` (a token array as the text of its ids), or None when it is none of the four shapes."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, str) for item in value):
        return list(value)
    if _is_tokens(value):
        return [" ".join(map(str, value))]
    if all(_is_tokens(item) for item in value):
        return [" ".join(map(str, item)) for item in value]
    return None


def encoded(vector: list[float], encoding: str) -> list[float] | str:
    """`vector` as the answer carries it: floats, or base64 of its little-endian float32 bytes."""
    if encoding != "base64":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
