"""`RedisPairStore`: the pairs and canary states in Redis instead of the database (`canary_redis_url`).

The same five operations as the database's (`proxy.auth.pairs`), kept compactly: per rule and candidate,
one hash of counts by (canary version, outcome, evaluator, judge's outcome), and a list of the latest
pairs as compact JSON (`RECENT` of them per rule; the counts keep all); per rule, one hash for its canary.
A canary is written by a Lua script that compares the stored version first, so two replicas never both
move it. Every key is under `prefix`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from proxy.auth.pairs import CanaryRow, OutcomeCount, PairRow
from proxy.auth.store import DatabaseError
from proxy.wire.redisurl import redact_url

__all__ = ["RECENT", "RedisPairStore"]

RECENT = 10_000
"""Pairs kept in full (their texts too, when content is logged) per rule; older ones live on in the counts."""
_NONE = "-"
_PUT = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


def _field(row: PairRow) -> str:
    return "|".join((str(row.canary_version), row.outcome, row.evaluator or _NONE, row.judge_outcome or _NONE))


def _count(field: str, pairs: int) -> OutcomeCount:
    version, outcome, evaluator, judged = field.split("|")
    return OutcomeCount(
        int(version), outcome, pairs, None if evaluator == _NONE else evaluator, None if judged == _NONE else judged
    )


class RedisPairStore:
    """Pairs and canaries in Redis (the `Database` operations of `proxy.auth.pairs`)."""

    def __init__(self, url: str, *, prefix: str = "turnout") -> None:
        self.display_url = redact_url(url) or ""
        self._url, self._prefix = url, prefix
        self._client: aioredis.Redis | None = None
        self._put: AsyncScript | None = None

    async def open(self) -> None:
        """Connect, and check that the server answers."""
        self._client = aioredis.Redis.from_url(self._url, decode_responses=True)
        self._put = self._client.register_script(_PUT)
        await self._call(self._client.ping())

    async def close(self) -> None:
        """Close the connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise DatabaseError(f"{self.display_url} is not open")
        return self._client

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise DatabaseError(f"{self.display_url}: {exc}") from exc

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, "parity", *parts))

    async def record_pair(self, row: PairRow) -> None:
        """Count the pair, and keep it among the rule's latest."""
        compact = {name: value for name, value in _row(row).items() if value is not None}
        async with self._redis().pipeline(transaction=True) as pipe:
            queued = (
                pipe.hincrby(self._key("counts", row.rule, row.candidate), _field(row), 1),
                pipe.lpush(self._key("recent", row.rule), json.dumps(compact, separators=(",", ":"))),
                pipe.ltrim(self._key("recent", row.rule), 0, RECENT - 1),
            )
            del queued  # a pipeline's commands return the pipeline: the replies come from execute()
            await self._call(pipe.execute())

    async def pair_counts(self, rule: str, candidate: str, since_version: int = 0) -> list[OutcomeCount]:
        """Pairs by canary version, outcome, evaluator and judge's outcome."""
        counts = await self._call(self._redis().hgetall(self._key("counts", rule, candidate)))
        found = [_count(field, int(pairs)) for field, pairs in counts.items()]
        return [count for count in found if count.canary_version >= since_version]

    async def canary(self, rule: str) -> CanaryRow | None:
        """The rule's canary."""
        values = await self._call(self._redis().hgetall(self._key("canary", rule)))
        return _canary(rule, values) if values else None

    async def canaries(self) -> list[CanaryRow]:
        """Every canary, by rule."""
        client, found = self._redis(), []
        pattern = self._key("canary", "*")
        keys = [key async for key in client.scan_iter(match=pattern, count=100)]
        for key in sorted(keys):
            values = await self._call(client.hgetall(key))
            if values:
                found.append(_canary(values["rule"], values))
        return sorted(found, key=lambda row: row.rule)

    async def put_canary(self, row: CanaryRow, expected_version: int | None) -> bool:
        """Write `row` if the stored version is `expected_version` (None: if there is none), atomically."""
        if self._put is None:
            raise DatabaseError(f"{self.display_url} is not open")
        fields = {
            "rule": row.rule,
            "candidate": row.candidate,
            "share": str(row.share),
            "passed": json.dumps(list(row.passed)),
            "status": row.status,
            "version": str(row.version),
            "since_version": str(row.since_version),
            "updated_at": row.updated_at.isoformat(),
        }
        flat = [item for pair in fields.items() for item in pair]
        expected = "" if expected_version is None else str(expected_version)
        done = await self._call(self._put(keys=[self._key("canary", row.rule)], args=[expected, *flat]))
        return bool(done)


def _row(row: PairRow) -> dict[str, Any]:
    return {
        "at": row.at.isoformat(),
        "id": row.request_id,
        "candidate": row.candidate,
        "reference": row.reference,
        "outcome": row.outcome,
        "evaluator": row.evaluator,
        "version": row.canary_version,
        "judge": row.judge_outcome,
        "candidate_text": row.candidate_text,
        "reference_text": row.reference_text,
    }


def _canary(rule: str, values: dict[str, str]) -> CanaryRow:
    return CanaryRow(
        rule=rule,
        candidate=values["candidate"],
        share=int(values["share"]),
        passed=tuple(int(share) for share in json.loads(values["passed"])),
        status=values["status"],
        version=int(values["version"]),
        since_version=int(values["since_version"]),
        updated_at=datetime.fromisoformat(values["updated_at"]),
    )
