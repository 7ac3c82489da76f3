"""`RedisLimiter`: the limits of `proxy.auth.limits`, counted in Redis, so that every replica enforces one limit.

One Lua script admits a request in all its scopes (checks everything, then counts everything: Redis runs a
script alone), one settles it. They run as `EVALSHA` (redis-py's `Script`: loaded once, loaded again on
`NOSCRIPT`, as after a Redis restart). A scope's keys, under `{prefix}:limit:{kind}:{name}`, all with TTLs:

- `:rpm`: a list of admission times (ms); it expires a window after the last one;
- `:tpm` and `:tpm:sum`: a list of `ms:tokens` settled, and their sum; likewise;
- `:budget:{period}` (a hash: `spent`, `reserved`) and `:budget:{period}:holds` (a sorted set of reservations,
  `token:amount` scored by expiry); they live until a day after the period ends.

Money is counted in integer nano-dollars (exact; Lua's doubles compare exactly up to about $9 million):
costs and reservations rounded up, budgets down. Times are this process's clock (the replicas' clocks must
agree to well under a second, as NTP keeps them), and the period a request falls in is worked out here. A
budget hash that is missing is seeded with `spent_since` (`HSETNX`: the first replica's seed wins), then the
acquire runs again. A reply lost to the timeout may leave a reservation (until it expires) or an rpm slot
taken: more refusals, never overspend. Not for Redis Cluster: a script's keys span several slots, and it
names only each scope's base key (passing all five costs redis-py as much as the script takes to run).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from proxy.auth.limits import (
    RESERVATION_TTL,
    WINDOW,
    Hold,
    Limits,
    Period,
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
local now_ms, n, member, reserve, expires, zero, window_ms =
  string.match(ARGV[1], '^(%d+) (%d+) (%S+) (%d+) (%d+) (%d) (%d+)$')
local now, window = tonumber(now_ms), tonumber(window_ms)
local limits, missing, soft = {}, {}, {}
for i = 1, tonumber(n) do
  local base = KEYS[i]
  local rpm, tpm, budget, soft_at, ttl, period =
    string.match(ARGV[i + 1], '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%d+) (%S+)$')
  rpm, tpm, budget = tonumber(rpm), tonumber(tpm), tonumber(budget)
  limits[i] = {rpm, budget, ttl, base .. ':budget:' .. period}
  if rpm >= 0 then
    local key = base .. ':rpm'
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
    local key, sum = base .. ':tpm', base .. ':tpm:sum'
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
    local key = limits[i][4]
    local spent = redis.call('HGET', key, 'spent')
    if not spent and zero ~= '1' then
      missing[#missing + 1] = i
    else
      for _, held in ipairs(redis.call('ZRANGEBYSCORE', key .. ':holds', '-inf', now)) do
        redis.call('HINCRBY', key, 'reserved', '-' .. string.match(held, ':(%d+)$'))
      end
      redis.call('ZREMRANGEBYSCORE', key .. ':holds', '-inf', now)
      spent = tonumber(spent or '0')
      if spent + tonumber(redis.call('HGET', key, 'reserved') or '0') >= budget then return {1, i, 'budget', -1} end
      if spent >= tonumber(soft_at) then soft[#soft + 1] = i end
    end
  end
end
if #missing > 0 then return {2, missing} end
for i, limit in ipairs(limits) do
  if limit[1] >= 0 then
    redis.call('RPUSH', KEYS[i] .. ':rpm', now_ms)
    redis.call('PEXPIRE', KEYS[i] .. ':rpm', window_ms)
  end
  if limit[2] >= 0 then
    local key, ttl = limit[4], limit[3]
    redis.call('HSETNX', key, 'spent', 0)
    if reserve ~= '0' then
      redis.call('HINCRBY', key, 'reserved', reserve)
      redis.call('ZADD', key .. ':holds', expires, member)
      redis.call('PEXPIRE', key .. ':holds', ttl)
    end
    redis.call('PEXPIRE', key, ttl)
  end
end
return {0, soft}
"""
"""KEYS: each scope's base, `{prefix}:limit:{kind}:{name}` (the script adds `:rpm`, `:tpm`, `:tpm:sum`,
`:budget:{period}` and its `:holds`). ARGV, packed into few strings because each argument costs redis-py
microseconds to encode: "now_ms scopes member reserve_nano expires_ms zero_seed window_ms", then per scope
"rpm tpm budget_nano soft_nano ttl_ms period" (-1: no such limit). Replies {0, soft scopes}, {1, scope, kind,
retry_ms}, {2, scopes whose budget must be seeded}."""

_SETTLE = """
local now, n, member, amount, cost, tokens, zero, window =
  string.match(ARGV[1], '^(%d+) (%d+) (%S+) (%d+) (%d+) (%d+) (%d) (%d+)$')
for i = 1, tonumber(n) do
  local base = KEYS[i]
  local has_tpm, has_budget, reserved, current, ttl = string.match(ARGV[i + 1], '^(%d) (%d) (%S+) (%S+) (%d+)$')
  if has_tpm == '1' and tokens ~= '0' then
    redis.call('RPUSH', base .. ':tpm', now .. ':' .. tokens)
    redis.call('INCRBY', base .. ':tpm:sum', tokens)
    redis.call('PEXPIRE', base .. ':tpm', window)
    redis.call('PEXPIRE', base .. ':tpm:sum', window)
  end
  if has_budget == '1' then
    local held = base .. ':budget:' .. reserved
    if member ~= '-' and redis.call('ZREM', held .. ':holds', member) == 1 then
      redis.call('HINCRBY', held, 'reserved', '-' .. amount)
    end
    local key = base .. ':budget:' .. current
    if cost ~= '0' and (zero == '1' or redis.call('HEXISTS', key, 'spent') == 1) then
      redis.call('HINCRBY', key, 'spent', cost)
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return 1
"""
"""KEYS: each scope's base. ARGV: "now_ms scopes member amount_nano cost_nano tokens zero_seed window_ms"
(member "-": no reservation to take back), then per scope "has_tpm has_budget reserved_period current_period
ttl_ms". A budget not seeded yet gets no cost: its seed reads it from the ledger."""

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
        self._spans: dict[Period, tuple[str, datetime, float]] = {}
        self._zero = int(spent_since is None)
        """1: a missing budget counts from zero (there is no ledger to seed it from)."""
        self._failing = False

    async def _run(self, script: AsyncScript, keys: list[str], args: Sequence[Any]) -> Any:
        async with asyncio.timeout(self._timeout):
            return await script(keys=keys, args=args)

    def _base_of(self, scope: Scope) -> str:
        return f"{self._base}{scope.kind}:{scope.name}"

    def _span(self, limits: Limits, now: float) -> tuple[str, datetime, float]:
        """`period_span`, worked out once a period."""
        period = budget_period(limits)
        span = self._spans.get(period)
        if span is None or not span[1].timestamp() <= now < span[2]:
            span = self._spans[period] = period_span(period, now)
        return span

    def _budget(self, scope: Scope, now: float) -> tuple[str, str, int]:
        """(period id, key, TTL in ms) of the scope's budget now ("none" without a budget)."""
        if scope.limits.budget_usd is None:
            return "none", "", 0
        period, _, end = self._span(scope.limits, now)
        return period, f"{self._base_of(scope)}:budget:{period}", int((end - now + PERIOD_MARGIN) * 1000)

    async def check(self, scopes: Sequence[Scope], *, reserve_usd: Decimal) -> Hold:
        """`acquire`, but a failing Redis raises one of `failures`."""
        now = self.clock()
        reserve = nano(reserve_usd)
        member = f"{secrets.token_hex(8)}:{reserve}"
        expires = int((now + RESERVATION_TTL) * 1000)
        args = [f"{int(now * 1000)} {len(scopes)} {member} {reserve} {expires} {self._zero} {int(WINDOW * 1000)}"]
        periods = []
        for scope in scopes:
            limits = scope.limits
            period, _, ttl = self._budget(scope, now)
            periods.append(period if limits.budget_usd is not None else "")
            budget = soft = _NONE
            if limits.budget_usd is not None:
                budget = nano(limits.budget_usd, ROUND_FLOOR)
                soft = nano(limits.budget_usd * Decimal(limits.soft_ratio))
            args.append(f"{_limit(limits.rpm)} {_limit(limits.tpm)} {budget} {soft} {ttl} {period}")
        keys = [self._base_of(scope) for scope in scopes]
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
                    retry = self._span(scope.limits, now)[2] - now
                elif int(reply[3]) >= 0:
                    retry = max(0.0, int(reply[3]) / 1000)
                raise Refused(kind, scope, retry)
            await self._seed_budgets([scopes[int(i) - 1] for i in reply[1]], now)
        raise Refused("unavailable")

    async def _seed_budgets(self, scopes: Sequence[Scope], now: float) -> None:
        """Set each missing budget's `spent` to what the ledger says (once per process at a time)."""
        for scope in scopes:
            _, key, ttl = self._budget(scope, now)
            lock = self._seeding.setdefault(key, asyncio.Lock())
            if lock.locked():  # another request of this process is seeding it: wait for that
                async with lock:
                    continue
            async with lock:
                spent = await read_seed(self.spent_since, scope, self._span(scope.limits, now)[1])
                await self._run(self._seed, [key], [nano(spent), ttl])
            self._seeding.pop(key, None)

    async def record(self, hold: Hold, *, cost_usd: Decimal, tokens: int) -> None:
        """`settle`, but whether the hold was settled before is not checked, and a failing Redis raises."""
        now = self.clock()
        reservation, _, amount = hold.token.rpartition(":")  # "token:amount"; "" (or another limiter's): none
        member, amount = (hold.token, amount) if reservation else ("-", "0")
        head = f"{int(now * 1000)} {len(hold.scopes)} {member} {amount} {nano(cost_usd)} {max(0, tokens)}"
        args = [f"{head} {self._zero} {int(WINDOW * 1000)}"]
        for index, scope in enumerate(hold.scopes):
            current, _, ttl = self._budget(scope, now)
            reserved = (hold.periods[index] if index < len(hold.periods) else "") or "-"
            has_tpm, has_budget = int(scope.limits.tpm is not None), int(scope.limits.budget_usd is not None)
            args.append(f"{has_tpm} {has_budget} {reserved} {current} {ttl}")
        await self._run(self._settle, [self._base_of(scope) for scope in hold.scopes], args)

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
