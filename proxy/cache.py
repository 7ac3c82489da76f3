"""`ResponseCache` Protocol, its in-process implementation, and `cache_key()` over an explicit field list.

The cache stores opaque bytes under string keys, with a TTL. More operations serve the layers on top:
`lock`/`renew`/`unlock` (single flight: the first of several identical requests calls the upstream,
holding a lock as a lease that it renews, see `proxy.cache_lease`) and `push`/`items` (a short list
per key: the semantic cache's recent questions). `RedisResponseCache` (`proxy.cache_redis`) is the
shared implementation; both pass the same contract tests.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec

__all__ = [
    "ANSWER_FIELDS",
    "IGNORED_FIELDS",
    "KEY_VERSION",
    "HeldLock",
    "MemoryResponseCache",
    "ResponseCache",
    "cache_key",
    "decode_fields",
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


_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _canonical(raw: msgspec.Raw) -> bytes:
    """A JSON value with sorted keys and no spaces: the same value always hashes the same."""
    text = bytes(raw)
    if text[:1] in (b"{", b"["):
        return _ENCODE(msgspec.json.decode(text))
    return text


def decode_fields(body: bytes) -> dict[str, msgspec.Raw]:
    """A chat request body's top-level fields, each value as the raw JSON it was sent as.

    Raises:
        msgspec.DecodeError: `body` is not a JSON object.
    """
    return _FIELDS.decode(body)


def cache_key(
    *,
    tenant: str | None,
    route: str,
    model: str | None,
    body: bytes,
    index_version: str | None = None,
    namespace: str = "",
) -> str:
    """The exact-match key of a chat request body (see `fields_key`).

    Raises:
        msgspec.DecodeError: `body` is not a JSON object (the pipeline only passes checked bodies).
    """
    return fields_key(
        tenant=tenant,
        route=route,
        model=model,
        fields=decode_fields(body),
        index_version=index_version,
        namespace=namespace,
    )


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
    of a RAG route, and every top-level body field (`decode_fields`) but `IGNORED_FIELDS`. Each part is
    written with its name and a separator, so no two different requests can run together into the same
    bytes.
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


@dataclass(slots=True, eq=False)
class HeldLock:
    """A lock its caller took, or may have taken: what it takes to renew and release it (one per holder)."""

    key: str
    token: bytes
    """Proves the lock is this holder's; empty when granted without asking the backend: nothing to renew or release."""
    until: float = 0.0
    """The backend's bookkeeping: by then (on its clock) the lock has surely expired."""


class ResponseCache(Protocol):
    """Bytes by key with a TTL, plus a set-if-absent lock and short lists; shared by one process or by all."""

    @property
    def name(self) -> str:
        """`memory` or `redis` (for logs and metrics)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None (absent, expired, or the backend is unreachable)."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` for `ttl` seconds (a failure is logged and counted, never raised)."""
        ...

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        ...

    async def lock(self, key: str, ttl: float) -> HeldLock | None:
        """Take the lock `key` for `ttl` seconds (a lease) unless someone holds it; None when someone does.

        When the backend is unreachable it grants the lock: better one more upstream call than none. When
        it cannot tell (the reply was lost), it grants it too and counts it as held: it is renewed and
        released like one that was taken, or expires `ttl` seconds after the last command.
        """
        ...

    async def renew(self, held: HeldLock, ttl: float) -> bool:
        """Extend `held` to `ttl` seconds from now.

        False when it is not (or no longer) this holder's: there is nothing more to renew. A backend
        that cannot be reached answers True: the lock may still be held, so keep renewing.
        """
        ...

    async def unlock(self, held: HeldLock) -> bool:
        """Release `held` if it is still this holder's.

        True when done (released, expired, or another's by now); False when the backend could not be
        reached and the lock may still be held: try again.
        """
        ...

    async def push(self, key: str, item: bytes, *, keep: int, ttl: float) -> None:
        """Add `item` to the front of the list `key`, keep its first `keep` items, and let it live `ttl` s."""
        ...

    async def items(self, key: str) -> list[bytes]:
        """The list `key`, newest first (empty when absent)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


_OVERHEAD = 96
"""Bytes an entry costs beyond its key and value (dict slot, tuple, float), counted against the limit."""


class MemoryResponseCache:
    """The in-process cache: least recently used first out when over `max_bytes`, each entry with a TTL."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[float, bytes | tuple[bytes, ...]]] = OrderedDict()
        self._size = 0
        self._clock = clock

    @property
    def name(self) -> str:
        """`memory`."""
        return "memory"

    @property
    def size(self) -> int:
        """Bytes counted against `max_bytes` now."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(key: str, value: bytes | tuple[bytes, ...]) -> int:
        stored = len(value) if isinstance(value, bytes) else sum(map(len, value)) + 8 * len(value)
        return len(key) + stored + _OVERHEAD

    def _live(self, key: str) -> bytes | tuple[bytes, ...] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._size -= self._cost(key, value)

    def _put(self, key: str, value: bytes | tuple[bytes, ...], ttl: float) -> None:
        if key in self._entries:
            self._drop(key)
        cost = self._cost(key, value)
        if cost > self.max_bytes or ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._size += cost
        while self._size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, marked as recently used."""
        value = self._live(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value`; the least recently used entries make room (a value larger than the limit is not kept)."""
        self._put(key, value, ttl)

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        if key in self._entries:
            self._drop(key)

    async def lock(self, key: str, ttl: float) -> HeldLock | None:
        """Take the lock unless a live one exists."""
        if self._live(key) is not None:
            return None
        held = HeldLock(key=key, token=secrets.token_bytes(8))
        self._put(key, held.token, ttl)
        return held

    async def renew(self, held: HeldLock, ttl: float) -> bool:
        """Extend the lock while it is live and still `held`'s."""
        if self._live(held.key) != held.token:
            return False
        self._put(held.key, held.token, ttl)
        return True

    async def unlock(self, held: HeldLock) -> bool:
        """Release the lock if it is still `held`'s (always done: there is no network to fail)."""
        if self._live(held.key) == held.token:
            self._drop(held.key)
        return True

    async def push(self, key: str, item: bytes, *, keep: int, ttl: float) -> None:
        """Prepend `item`, trim to `keep` items, renew the TTL."""
        current = self._live(key)
        old = current if isinstance(current, tuple) else ()
        self._put(key, (item, *old)[:keep], ttl)

    async def items(self, key: str) -> list[bytes]:
        """The list, newest first."""
        value = self._live(key)
        return list(value) if isinstance(value, tuple) else []

    async def aclose(self) -> None:
        """Nothing to release."""
