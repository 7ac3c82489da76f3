"""`BatchBilling`: what a Batch API job cost, charged once per batch id, when Turnout first relays it completed.

A batch (`POST /v1/batches`) passes through unrouted; its answers are made upstream over hours and fetched as a
file. What it cost is in the batch object itself once it is done: OpenAI's `usage` (`input_tokens`, with
`input_tokens_details.cached_tokens`, `output_tokens`, with `output_tokens_details.reasoning_tokens`) and its
`model`. So the pass-through reads the batch objects of `/v1/batches` it relays (a retrieve, a cancel; a
list is not read: clients poll a batch by its id), and the first time it sees a batch `completed` (or
`cancelled`, `expired`: the requests it did finish are billed too) with its usage, it charges the request
that fetched it at the Batch API's rates
(`tier="batch"`: half the standard rates unless the price table says otherwise). A batch is the client's
own request sent as it came, so it is its own baseline: it saves nothing and overspends nothing.

Once per batch id, on every replica: the ids already charged are claimed where the response cache is
shared (Redis, `SET NX` with a 30-day TTL, as long as OpenAI keeps a batch's files) or, without a Redis,
in this process's memory (bounded, the oldest forgotten first). A Redis that fails is logged and the batch
is not charged then: the next fetch tries again, so a batch is never charged twice, and at worst late.
A batch object with no `model` (an older upstream) is left unpriced.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Protocol

import msgspec

from proxy.accounting.cost import PriceTable
from proxy.accounting.tally import Tally
from proxy.config.sections import CacheSettings
from proxy.endpoints.responses_replay import ResponsesUsage, usage_of_counts
from proxy.wire.redisurl import redact_url

__all__ = ["BatchBilling", "BatchClaims", "MemoryClaims", "RedisClaims", "open_claims"]

logger = logging.getLogger("turnout.passthrough")

_ENDED = frozenset({"completed", "cancelled", "expired"})
"""A batch in one of these states has all the usage it will ever have."""
_TTL_SECONDS = 30 * 24 * 3600
_MEMORY_IDS = 100_000


class _Batch(msgspec.Struct, frozen=True):
    """A batch object, as far as its bill goes."""

    id: str = ""
    object: str = ""
    status: str | None = None
    model: str | None = None
    usage: ResponsesUsage | None = None


_DECODER = msgspec.json.Decoder(_Batch)


class BatchClaims(Protocol):
    """The batch ids already charged (memory or Redis)."""

    async def claim(self, batch_id: str) -> bool:
        """True the first time `batch_id` is claimed anywhere; False after, or when the store failed."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""
        ...


class MemoryClaims:
    """This process's claims: the newest `limit` ids."""

    def __init__(self, limit: int = _MEMORY_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    async def claim(self, batch_id: str) -> bool:
        """True unless `batch_id` is among the ids kept."""
        if batch_id in self._ids:
            return False
        self._ids[batch_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True

    async def aclose(self) -> None:
        """Nothing to release."""


class RedisClaims:
    """Claims every replica shares: `SET {prefix}:batch-charged:{id} 1 NX EX 30d`."""

    def __init__(self, settings: CacheSettings) -> None:
        if settings.url is None:
            raise ValueError("the redis claims need a url")
        from proxy.cache.redis import FAILURES, redis_client  # only with Redis: redis-py is slow to import

        self._failures = FAILURES
        self._client = redis_client(settings.url, settings)
        self._prefix = f"{settings.key_prefix}:batch-charged:"
        self._where = redact_url(settings.url)

    async def claim(self, batch_id: str) -> bool:
        """`SET NX`: True when this call set it; False when it was set, or Redis failed (logged)."""
        try:
            return bool(await self._client.set(self._prefix + batch_id, b"1", nx=True, ex=_TTL_SECONDS))
        except self._failures as exc:
            logger.warning("could not claim batch %s in redis at %s: %s", batch_id, self._where, exc)
            return False

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose(close_connection_pool=True)


def open_claims(cache: CacheSettings) -> BatchClaims:
    """Where the response cache is shared: Redis when the cache names one, else this process's memory."""
    return RedisClaims(cache) if cache.uses_redis else MemoryClaims()


class BatchBilling:
    """Charges a pass-through request for the ended batches its answer shows, each batch once."""

    __slots__ = ("_claims",)

    def __init__(self, claims: BatchClaims) -> None:
        self._claims = claims

    async def relayed(self, prices: PriceTable, tally: Tally, body: bytes) -> None:
        """`body` (a `/v1/batches` answer with status 200) is being relayed: charge `tally` for the batch it shows."""
        try:
            batch = _DECODER.decode(body)
        except msgspec.DecodeError:  # not a batch object (a list, another shape): relayed as it came
            return
        if batch.object != "batch" or batch.status not in _ENDED or not batch.id or batch.usage is None:
            return
        if batch.model is None or prices.price(batch.model, "batch") is None:
            return
        if await self._claims.claim(batch.id):
            tally.charge_for(prices, batch.model, usage_of_counts(batch.usage), compared=False, tier="batch")
