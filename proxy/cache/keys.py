"""Exact-match cache keys: a hash over who asks, where the request goes, and every field that changes the answer.

`ANSWER_FIELDS` and `IGNORED_FIELDS` say which of a chat request's top-level fields are keyed; a field in
neither (a new one) is keyed too, so that no new parameter can make two different requests share an answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

__all__ = [
    "ANSWER_FIELDS",
    "IGNORED_FIELDS",
    "KEY_VERSION",
    "fields_key",
    "is_deterministic",
]

KEY_VERSION = "v1"
"""Bumped when what a key covers changes, so that old entries are never read as new ones."""

ANSWER_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "service_tier",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "verbosity",
        "web_search_options",
    }
)
"""Request fields that change the answer: each one's value is part of the key."""

IGNORED_FIELDS = frozenset(
    {
        "metadata",  # labels for the caller's own bookkeeping
        "prompt_cache_key",  # the upstream's prompt cache, not the answer
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",  # abuse monitoring
        "store",  # whether OpenAI keeps the completion
        "stream",  # a hit replays in either form
        "stream_options",  # likewise: the usage chunk is added or left out on replay
        "user",  # abuse monitoring; tenants are keyed separately
    }
)
"""Request fields that do not change the answer. A field in neither set (a new one) is keyed too."""

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
    index_version: str | None = None,
    namespace: str = "",
) -> str:
    """The exact-match key of a chat request: a hash over who asks, where it goes, and what it asks.

    Covers the tenant (None and "" are one anonymous tenant), the decided route and the model its
    upstream answers with (`model` None: the caller's own, from the body), the knowledge-index version
    of a RAG route, and every top-level body field (each value the raw JSON it was sent as) but
    `IGNORED_FIELDS`. Each part is written with its name and a separator, so no two different requests
    can run together into the same bytes.
    """
    digest = hashlib.blake2b(digest_size=20)
    for name, value in (
        ("tenant", tenant or ""),
        ("route", route),
        ("upstream_model", model or ""),
        ("index", index_version or ""),
    ):
        digest.update(name.encode() + _SEP + value.encode() + _SEP)
    for name in sorted(fields):
        if name in IGNORED_FIELDS or (name == "model" and model is not None):
            continue
        digest.update(b"f" + _SEP + name.encode() + _SEP + _canonical(fields[name]) + _SEP)
    return f"{namespace}{KEY_VERSION}:{digest.hexdigest()}"


def is_deterministic(temperature: float | None, seed_given: bool) -> bool:
    """Whether a request asks for one reproducible answer: `temperature: 0` or a fixed `seed`."""
    return temperature == 0 or seed_given
