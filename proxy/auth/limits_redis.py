"""`RedisLimiter`: the limits of `proxy.auth.limits`, counted in Redis, so that every replica enforces one limit.

One Lua script admits a request in all its scopes (checks everything, then counts everything: Redis runs a
script alone), one settles it. They run as `EVALSHA` (redis-py's `Script`: loaded once, loaded again on
`NOSCRIPT`, as after a Redis restart). The keys, under `{prefix}:limit:`, all with TTLs:

- `rpm:{kind}:{name}`: a list of admission times (ms); expires a window after the last one;
- `tpm:{kind}:{name}` and `...:sum`: a list of `ms:tokens` settled, and their sum;
- `budget:{kind}:{name}:{period}` (a hash: `spent`, `reserved`) and `...:holds` (a sorted set of reservations,
  `token:amount` scored by expiry); they live until a day after the period ends.

Money is counted in integer nano-dollars (exact; Lua's doubles compare exactly up to about $9 million):
costs and reservations rounded up, budgets down. Times are this process's clock (the replicas' clocks must
agree to well under a second, as NTP keeps them), and the period a request falls in is worked out here. A
budget hash that is missing is seeded with `spent_since` (`HSETNX`: the first replica's seed wins), then the
acquire runs again. A reply lost to the timeout may leave a reservation (until it expires) or an rpm slot
taken: more refusals, never overspend. Not for Redis Cluster: one script's keys span several slots.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from proxy.auth.limits import (
    RESERVATION_TTL,
    WINDOW,
    Hold,
    Refused,
    Scope,
    SpentSince,
    budget_period,
    period_span,
    read_seed,
)

__all__ = ["RedisLimiter"]

logger = logging.getLogger("turnout.auth")

NANO = Decimal(10) ** 9
PERIOD_MARGIN = 86_400.0
"""Seconds a budget's keys outlive its period (a request settling just after it still finds its reservation)."""
_NONE = -1
"""A limit that is not set, to the scripts."""

_ACQUIRE = """
local now, n, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local missing, soft = {}, {}
for i = 1, n do
  local k, a = (i - 1) * 5, 7 + (i - 1) * 5
  local rpm, tpm, budget = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if rpm >= 0 then
    local key = KEYS[k + 1]
    local head = redis.call('LINDEX', key, 0)
    while head and tonumber(head) <= now - window do
      redis.call('LPOP', key)
      head = redis.call('LINDEX', key, 0)
    end
    if redis.call('LLEN', key) >= rpm then
      if head then return {1, i, 'rpm', tonumber(head) + window - now} end
      return {1, i, 'rpm', -1}
    end
  end
  if tpm >= 0 then
    local key, sum = KEYS[k + 2], KEYS[k + 3]
    local head = redis.call('LINDEX', key, 0)
    while head do
      local at, tokens = string.match(head, '^(%d+):(%d+)$')
      if tonumber(at) > now - window then break end
      redis.call('LPOP', key)
      redis.call('DECRBY', sum, tokens)
      head = redis.call('LINDEX', key, 0)
    end
    local left = tonumber(redis.call('GET', sum) or '0')
    if left >= tpm then
      for _, entry in ipairs(redis.call('LRANGE', key, 0, -1)) do
        local at, tokens = string.match(entry, '^(%d+):(%d+)$')
        left = left - tonumber(tokens)
        if left < tpm then return {1, i, 'tpm', tonumber(at) + window - now} end
      end
      return {1, i, 'tpm', -1}
    end
  end
  if budget >= 0 then
    local key, holds = KEYS[k + 4], KEYS[k + 5]
    local spent = redis.call('HGET', key, 'spent')
    if not spent and ARGV[6] ~= '1' then
      missing[#missing + 1] = i
    else
      for _, member in ipairs(redis.call('ZRANGEBYSCORE', holds, '-inf', now)) do
        redis.call('HINCRBY', key, 'reserved', '-' .. string.match(member, ':(%d+)$'))
      end
      redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
      spent = tonumber(spent or '0')
      if spent + tonumber(redis.call('HGET', key, 'reserved') or '0') >= budget then return {1, i, 'budget', -1} end
      if spent >= tonumber(ARGV[a + 4]) then soft[#soft + 1] = i end
    end
  end
end
if #missing > 0 then return {2, missing} end
for i = 1, n do
  local k, a = (i - 1) * 5, 7 + (i - 1) * 5
  if tonumber(ARGV[a + 1]) >= 0 then
    redis.call('RPUSH', KEYS[k + 1], ARGV[1])
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[7])
  end
  if tonumber(ARGV[a + 3]) >= 0 then
    local key, holds, ttl = KEYS[k + 4], KEYS[k + 5], ARGV[a + 5]
    redis.call('HSETNX', key, 'spent', 0)
    if ARGV[4] ~= '0' then
      redis.call('HINCRBY', key, 'reserved', ARGV[4])
      redis.call('ZADD', holds, ARGV[5], ARGV[3])
      redis.call('PEXPIRE', holds, ttl)
    end
    redis.call('PEXPIRE', key, ttl)
  end
end
return {0, soft}
"""
"""KEYS: per scope rpm, tpm, tpm sum, budget, holds. ARGV: now (ms), scopes, hold member, reservation (nano),
the reservation's expiry (ms), whether to count a missing budget from zero, the window (ms); per scope rpm,
tpm, budget (nano), soft threshold (nano), the budget keys' TTL (ms). Replies {0, soft scopes}, {1, scope,
kind, retry ms}, {2, scopes whose budget must be seeded}."""

_SETTLE = """
for i = 1, tonumber(ARGV[2]) do
  local k, a = (i - 1) * 5, 8 + (i - 1) * 3
  if ARGV[a + 1] == '1' and ARGV[6] ~= '0' then
    redis.call('RPUSH', KEYS[k + 1], ARGV[1] .. ':' .. ARGV[6])
    redis.call('INCRBY', KEYS[k + 2], ARGV[6])
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[8])
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[8])
  end
  if ARGV[a + 2] == '1' then
    if ARGV[3] ~= '' and redis.call('ZREM', KEYS[k + 4], ARGV[3]) == 1 then
      redis.call('HINCRBY', KEYS[k + 3], 'reserved', '-' .. ARGV[4])
    end
    if ARGV[5] ~= '0' and (ARGV[7] == '1' or redis.call('HEXISTS', KEYS[k + 5], 'spent') == 1) then
      redis.call('HINCRBY', KEYS[k + 5], 'spent', ARGV[5])
      redis.call('PEXPIRE', KEYS[k + 5], ARGV[a + 3])
    end
  end
end
return 1
"""
"""KEYS: per scope tpm, tpm sum, the reservation's budget and holds, this period's budget. ARGV: now (ms),
scopes, hold member ("": none), reservation (nano), cost (nano), tokens, whether to count a missing budget
from zero, the window (ms); per scope whether it has tpm, a budget, this period's TTL (ms). A budget not seeded
yet gets no cost: its seed reads it from the ledger."""

_SEED = """
for i, key in ipairs(KEYS) do
  if redis.call('HSETNX', key, 'spent', ARGV[2 * i - 1]) == 1 then redis.call('PEXPIRE', key, ARGV[2 * i]) end
end
return 1
"""


def nano(usd: Decimal, rounding: str = ROUND_CEILING) -> int:
    """Dollars as integer nano-dollars."""
    return int((usd * NANO).to_integral_value(rounding))


def _limit(value: int | None) -> int:
    return _NONE if value is None else value


class RedisLimiter:
    """Limits counted in Redis under `{prefix}:limit:`, atomically over a request's scopes."""

    failures: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)
    """What a Redis that fails or does not answer in time raises from `check` and `record`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        spent_since: SpentSince | None = None,
        timeout: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Count in `client`'s Redis (the caller closes the client); each script waits `timeout` s at most."""
        self.spent_since = spent_since
        self.clock = clock
        """Epoch seconds: the windows, the periods and the reservations' expiry."""
        self._base = f"{prefix}:limit:"
        self._timeout = timeout
        self._acquire: AsyncScript = client.register_script(_ACQUIRE)
        self._settle: AsyncScript = client.register_script(_SETTLE)
        self._seed: AsyncScript = client.register_script(_SEED)
        self._seeding: dict[str, asyncio.Lock] = {}
        self._failing = False

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        async with asyncio.timeout(self._timeout):
            return await script(keys=keys, args=args)

    def _key(self, what: str, scope: Scope) -> str:
        return f"{self._base}{what}:{scope.kind}:{scope.name}"

    def _budget_key(self, scope: Scope, now: float) -> tuple[str, str, float]:
        """(key, period id, TTL in ms) of the scope's budget now."""
        period, _, end = period_span(budget_period(scope.limits), now)
        return f"{self._key('budget', scope)}:{period}", period, (end - now + PERIOD_MARGIN) * 1000

    async def check(self, scopes: Sequence[Scope], *, reserve_usd: Decimal) -> Hold:
        """`acquire`, but a failing Redis raises one of `failures`."""
        now = self.clock()
        token, reserve = secrets.token_hex(8), nano(reserve_usd)
        member = f"{token}:{reserve}"
        keys: list[str] = []
        args: list[Any] = [int(now * 1000), len(scopes), member, reserve, int((now + RESERVATION_TTL) * 1000)]
        args += [int(self.spent_since is None), int(WINDOW * 1000)]
        periods = []
        for scope in scopes:
            limits, tpm = scope.limits, self._key("tpm", scope)
            budget, period, ttl = f"{self._key('budget', scope)}:none", "", 0.0
            if limits.budget_usd is not None:
                budget, period, ttl = self._budget_key(scope, now)
            periods.append(period)
            keys += [self._key("rpm", scope), tpm, tpm + ":sum", budget, budget + ":holds"]
            if limits.budget_usd is None:
                args += [_limit(limits.rpm), _limit(limits.tpm), _NONE, _NONE, 0]
            else:
                soft = nano(limits.budget_usd * Decimal(limits.soft_ratio))
                args += [_limit(limits.rpm), _limit(limits.tpm), nano(limits.budget_usd, ROUND_FLOOR), soft, int(ttl)]
        for _ in range(3):  # seeded budgets are found on the second run (unless they expired in between)
            reply = await self._run(self._acquire, keys, args)
            if reply[0] == 0:
                soft_scopes = tuple(scopes[int(i) - 1] for i in reply[1])
                return Hold(tuple(scopes), reserve_usd, soft_scopes, member, tuple(periods), self)
            if reply[0] == 1:
                scope = scopes[int(reply[1]) - 1]
                kind = cast("Any", reply[2].decode() if isinstance(reply[2], bytes) else reply[2])
                retry: float | None = None
                if kind == "budget":
                    retry = period_span(budget_period(scope.limits), now)[2] - now
                elif int(reply[3]) >= 0:
                    retry = max(0.0, int(reply[3]) / 1000)
                raise Refused(kind, scope, retry)
            await self._seed_budgets([scopes[int(i) - 1] for i in reply[1]], now)
        raise Refused("unavailable")

    async def _seed_budgets(self, scopes: Sequence[Scope], now: float) -> None:
        """Set each missing budget's `spent` to what the ledger says (once per process at a time)."""
        for scope in scopes:
            key, _, ttl = self._budget_key(scope, now)
            lock = self._seeding.setdefault(key, asyncio.Lock())
            if lock.locked():  # another request of this process is seeding it: wait for that
                async with lock:
                    continue
            async with lock:
                start = period_span(budget_period(scope.limits), now)[1]
                spent = await read_seed(self.spent_since, scope, start)
                await self._run(self._seed, [key], [nano(spent), int(ttl)])
            self._seeding.pop(key, None)

    async def record(self, hold: Hold, *, cost_usd: Decimal, tokens: int) -> None:
        """`settle`, but whether the hold was settled before is not checked, and a failing Redis raises."""
        now = self.clock()
        amount = hold.token.rpartition(":")[2] or "0"
        keys: list[str] = []
        args: list[Any] = [int(now * 1000), len(hold.scopes), hold.token, amount, nano(cost_usd), max(0, tokens)]
        args += [int(self.spent_since is None), int(WINDOW * 1000)]
        for index, scope in enumerate(hold.scopes):
            tpm, reserved = self._key("tpm", scope), f"{self._key('budget', scope)}:none"
            current = reserved
            ttl = 0.0
            if scope.limits.budget_usd is not None:
                current, _, ttl = self._budget_key(scope, now)
                period = hold.periods[index] if index < len(hold.periods) else ""
                reserved = f"{self._key('budget', scope)}:{period}"
            keys += [tpm, tpm + ":sum", reserved, reserved + ":holds", current]
            args += [int(scope.limits.tpm is not None), int(scope.limits.budget_usd is not None), int(ttl)]
        await self._run(self._settle, keys, args)

    def _failed(self, what: str, error: Exception) -> None:
        if not self._failing:
            logger.warning("limits: redis failed on %s (%s: %s)", what, type(error).__name__, error)
        self._failing = True

    async def acquire(self, scopes: Sequence[Scope], *, reserve_usd: Decimal) -> Hold:
        """Admit in every scope or in none; a failing Redis refuses (`unavailable`: see `FallbackLimiter`)."""
        try:
            hold = await self.check(scopes, reserve_usd=reserve_usd)
        except self.failures as exc:
            self._failed("acquire", exc)
            raise Refused("unavailable") from exc
        self._failing = False
        return hold

    async def settle(self, hold: Hold, *, cost_usd: Decimal, tokens: int) -> None:
        """Count the real cost and tokens; a failing Redis is logged (the reservation then expires)."""
        if hold.settled:
            return
        hold.settled = True
        try:
            await self.record(hold, cost_usd=cost_usd, tokens=tokens)
        except self.failures as exc:
            self._failed("settle", exc)

    async def close(self) -> None:
        """Nothing: the client is the caller's to close."""
