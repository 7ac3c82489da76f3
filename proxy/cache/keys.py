"""Exact-match cache keys: a hash over who asks, where the request goes, and every field that changes the answer.

Every top-level field is keyed but those the endpoint's codec says never change the answer
(`Codec.ignored_fields`): a new parameter is keyed too, so that it can never make two different requests
share an answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

__all__ = [
    "KEY_VERSION",
    "fields_key",
]

KEY_VERSION = "v1"
"""Bumped when what a key covers changes, so that old entries are never read as new ones."""

_SEP = b"\x1f"  # unit separator: no field name or canonical JSON value contains it unescaped
_ENCODE = msgspec.json.Encoder(order="sorted").encode


def _canonical(raw: msgspec.Raw) -> bytes:
    """A JSON value with sorted keys and no spaces: the same value always hashes the same."""
    text = bytes(raw)
    if text[:1] in (b"{", b"["):
        return _ENCODE(msgspec.json.decode(text))
    return text


def fields_key(
    *,
    tenant: str | None,
    route: str,
    model: str | None,
    fields: Mapping[str, msgspec.Raw],
    ignored: frozenset[str],
    scope: str = "",
) -> str:
    """The exact-match key of a request: a hash over who asks, where it goes, and what it asks.

    Covers the tenant (None and "" are one anonymous tenant), the decided route and the model its
    upstream answers with (`model` None: the caller's own, from the body), the route's cache scope (a
    RAG route's index version), and every top-level body field but the `ignored` ones (the endpoint
    codec's `ignored_fields`). Each part is written with its name and a separator, so no two different
    requests can run together into the same bytes.
    """
    digest = hashlib.blake2b(digest_size=20)
    for name, value in (
        ("tenant", tenant or ""),
        ("route", route),
        ("upstream_model", model or ""),
        ("index", scope),
    ):
        digest.update(name.encode() + _SEP + value.encode() + _SEP)
    for name in sorted(fields):
        if name in ignored or (name == "model" and model is not None):
            continue
        digest.update(b"f" + _SEP + name.encode() + _SEP + _canonical(fields[name]) + _SEP)
    return f"{KEY_VERSION}:{digest.hexdigest()}"
