"""Rate limits and budgets per key and team: admitted atomically over all scopes, counted per process or in Redis.

One `acquire` takes a request's scopes (its key's, its team's): either every scope admits it and each counts
it, or it is `Refused` and nothing is counted. `settle` then gives the request's real cost and tokens.

- rpm: a sliding log of admission times: at most `rpm` admissions in any 60 s (`retry_after`: until one frees).
- tpm: a sliding log of settled tokens: admitted while the tokens settled in the last 60 s are under `tpm`
  (`retry_after`: until enough of them are 60 s old); tokens are known only when settled.
- budget, per UTC day or month: admitted while `spent + reserved < budget_usd`; admission adds `reserve_usd`
  to `reserved` (one reservation per hold); `settle` takes the reservation back and adds the real cost
  (`reserved -= r; spent += c`, into the period the request settles in). A reservation that is never settled
  (its process died) expires after `RESERVATION_TTL`. `retry_after`: until the period ends. A budget counter is
  seeded from the ledger (`SpentSince`) the first time it is seen, so a restart loses no recorded spend.

The overspend bound. Let request k be the last one admitted in a period, F the requests in flight (admitted,
not settled) when it was, c their costs, r their reservations. When k was admitted, spent + Σ_F r < budget;
everything admitted after the period began is settled before k, in F, or k; so, finally,

    spent - budget < c_k + Σ_F (c_i - r_i)

At most the cost of the requests admitted while `spent + reserved` was under the budget, beyond their
reservations; with reservations at least the costs, less than one request's cost (none when every request
costs the same and the budget is a multiple of it). This holds across replicas with Redis (one Lua script
per acquire and per settle; `limits_redis`), and per process without it. It does not hold during a Redis
outage under `FallbackLimiter` (each process counts on its own, seeded from the ledger), past a reservation
that expired before its request settled, nor for costs settled before their period's counter was seeded and
not yet in the ledger when it was (a seed reads the ledger; a cost settled with no counter is left to it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from proxy.auth.limits_redis import RedisLimiter

__all__ = ["FallbackLimiter", "Hold", "Limiter", "Limits", "MemoryLimiter", "Period", "Refused", "Scope", "SpentSince"]

logger = logging.getLogger("turnout.auth")

Period = Literal["day", "month"]
RefusalKind = Literal["rpm", "tpm", "budget", "unavailable"]
WINDOW = 60.0
"""Seconds: the window of rpm and tpm."""
RESERVATION_TTL = 900.0
"""Seconds after which a reservation that was never settled stops counting (its process died)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """One key's or team's limits; None: no such limit."""

    rpm: int | None = None
    tpm: int | None = None
    budget_usd: Decimal | None = None
    period: Period | None = None
    """The budget's period; "month" when a budget has none."""
    soft_ratio: float = 0.8
    """Spend past this share of the budget is "soft exceeded"."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose limits: a key's or a team's, by name."""

    kind: Literal["key", "team"]
    name: str
    limits: Limits


class Refused(Exception):  # noqa: N818 - the name the shared interface (BRIEF, issue 14) gives it
    """A request that a limit does not admit now (or, with `unavailable`, that cannot be counted)."""

    def __init__(self, kind: RefusalKind, scope: Scope | None = None, retry_after: float | None = None) -> None:
        whose = f" of {scope.kind} {scope.name!r}" if scope is not None else ""
        super().__init__(("limits unavailable" if kind == "unavailable" else f"{kind} limit") + whose)
        self.kind = kind
        self.scope = scope
        self.retry_after = retry_after
        """Seconds: rpm/tpm until the window frees, budget until the period ends; None when unknown."""


@dataclass(slots=True)
class Hold:
    """One admitted request's claim, given back to `settle`; callers read only the first three fields."""

    scopes: tuple[Scope, ...]
    reserved_usd: Decimal
    soft_exceeded: tuple[Scope, ...]
    """The budgets already past their soft ratio when the request was admitted."""
    token: str = ""
    """The reservation's name in the counters ("": none, nothing to take back)."""
    periods: tuple[str, ...] = ()
    """Per scope, the budget period its reservation went into ("" for a scope without a budget)."""
    issuer: object = field(default=None, repr=False)
    """The limiter that admitted it (`FallbackLimiter` settles each hold where it came from)."""
    settled: bool = False


SpentSince = Callable[[Scope, datetime], Awaitable[Decimal]]
"""What the ledger says a scope spent since a period's start: seeds a budget counter the first time it is seen
(in a process, or in Redis when its key is missing), so that a restart loses no recorded spend."""


class Limiter(Protocol):
    """Admits requests against their scopes' limits, and counts what they cost."""

    async def acquire(self, scopes: Sequence[Scope], *, reserve_usd: Decimal) -> Hold:
        """Admit a request in every scope, or raise `Refused` and count nothing."""

    async def settle(self, hold: Hold, *, cost_usd: Decimal, tokens: int) -> None:
        """Take the hold's reservation back and count its real cost and tokens; never raises; once per hold."""

    async def close(self) -> None:
        """Release what the limiter holds."""


def period_span(period: Period, now: float) -> tuple[str, datetime, float]:
    """The period `now` (epoch seconds) is in: its id ("d2026-12-03", "m2026-12"), start, and end (epoch)."""
    at = datetime.fromtimestamp(now, UTC)
    start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return f"d{start:%Y-%m-%d}", start, (start + timedelta(days=1)).timestamp()
    start = start.replace(day=1)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return f"m{start:%Y-%m}", start, end.timestamp()


def budget_period(limits: Limits) -> Period:
    """A budget's period ("month" unless said)."""
    return limits.period or "month"


async def read_seed(spent_since: SpentSince | None, scope: Scope, start: datetime) -> Decimal:
    """What the ledger says `scope` spent since `start` (0 without a ledger); `Refused("unavailable")` if it fails."""
    if spent_since is None:
        return Decimal(0)
    try:
        return await spent_since(scope, start)
    except Exception as exc:  # whatever the database raises: refusing beats counting from zero
        logger.warning("limits: the spend of %s %r could not be read (%r)", scope.kind, scope.name, exc)
        raise Refused("unavailable", scope) from exc


@dataclass(slots=True)
class _Budget:
    period: str
    start: float
    end: float
    spent: Decimal
    reserved: Decimal = Decimal(0)
    holds: dict[str, Decimal] = field(default_factory=dict)
    expiring: deque[tuple[float, str]] = field(default_factory=deque)
    """(expiry, token), in admission order: all reservations live equally long."""

    def current(self, period: Period, now: float) -> bool:
        return self.start <= now < self.end and self.period[0] == period[0]

    def release(self, token: str) -> None:
        amount = self.holds.pop(token, None)
        if amount is not None:
            self.reserved -= amount

    def expire(self, now: float) -> None:
        """Drop expired reservations, and settled ones from the head of the queue."""
        while self.expiring and (self.expiring[0][0] <= now or self.expiring[0][1] not in self.holds):
            self.release(self.expiring.popleft()[1])


@dataclass(slots=True)
class _Counters:
    admitted: deque[float] = field(default_factory=deque)
    settled: deque[tuple[float, int]] = field(default_factory=deque)
    tokens: int = 0
    budget: _Budget | None = None

    def trim(self, now: float) -> None:
        while self.admitted and self.admitted[0] <= now - WINDOW:
            self.admitted.popleft()
        while self.settled and self.settled[0][0] <= now - WINDOW:
            self.tokens -= self.settled.popleft()[1]

    def tokens_free_at(self, tpm: int) -> float:
        """When the tokens in the window fall under `tpm`."""
        left = self.tokens
        for at, tokens in self.settled:
            left -= tokens
            if left < tpm:
                return at + WINDOW
        return 0.0  # unreachable: only asked when the window holds `tpm` tokens or more


class MemoryLimiter:
    """This process's counters: exact, with no I/O but the ledger's seed (atomic: no await between check and count)."""

    def __init__(self, *, spent_since: SpentSince | None = None, clock: Callable[[], float] = time.time) -> None:
        """Count from `clock` (epoch seconds: periods are UTC days and months), seeding budgets with `spent_since`."""
        self._spent_since = spent_since
        self._clock = clock
        self._counters: dict[tuple[str, str], _Counters] = {}
        self._seeding: dict[tuple[str, str], asyncio.Lock] = {}
        self._tokens = (f"m{n}" for n in itertools.count())

    def _of(self, scope: Scope) -> _Counters:
        key = (scope.kind, scope.name)
        return self._counters.get(key) or self._counters.setdefault(key, _Counters())

    def _unseeded(self, scopes: Sequence[Scope], now: float) -> list[Scope]:
        """The scopes whose budget has no counter for the period `now` is in."""
        return [s for s in scopes if s.limits.budget_usd is not None and not self._seeded(s, now)]

    def _seeded(self, scope: Scope, now: float) -> bool:
        budget = self._of(scope).budget
        return budget is not None and budget.current(budget_period(scope.limits), now)

    async def _seed(self, scope: Scope) -> None:
        """Start this period's counter from the ledger (once, however many requests wait for it)."""
        lock = self._seeding.setdefault((scope.kind, scope.name), asyncio.Lock())
        async with lock:
            now = self._clock()
            if not self._unseeded([scope], now):
                return
            period, start, end = period_span(budget_period(scope.limits), now)
            spent = await read_seed(self._spent_since, scope, start)
            self._of(scope).budget = _Budget(period, start.timestamp(), end, spent)
        if not lock.locked():
            self._seeding.pop((scope.kind, scope.name), None)

    def _check(self, scope: Scope, now: float) -> None:
        counters, limits = self._of(scope), scope.limits
        counters.trim(now)
        if limits.rpm is not None and len(counters.admitted) >= limits.rpm:
            retry = counters.admitted[0] + WINDOW - now if counters.admitted else None
            raise Refused("rpm", scope, retry)
        if limits.tpm is not None and counters.tokens >= limits.tpm:
            raise Refused("tpm", scope, max(0.0, counters.tokens_free_at(limits.tpm) - now))
        if limits.budget_usd is not None and counters.budget is not None:
            budget = counters.budget
            budget.expire(now)
            if budget.spent + budget.reserved >= limits.budget_usd:
                raise Refused("budget", scope, budget.end - now)

    async def acquire(self, scopes: Sequence[Scope], *, reserve_usd: Decimal) -> Hold:
        """Admit in every scope or in none (`Refused`)."""
        while True:  # until every budget has this period's counter (a period may end while seeding)
            now = self._clock()
            if not (unseeded := self._unseeded(scopes, now)):
                break
            for scope in unseeded:
                await self._seed(scope)
        for scope in scopes:
            self._check(scope, now)
        token, periods, soft = next(self._tokens), [], []
        for scope in scopes:
            counters, limits = self._of(scope), scope.limits
            if limits.rpm is not None:
                counters.admitted.append(now)
            if limits.budget_usd is None or counters.budget is None:
                periods.append("")
                continue
            budget = counters.budget
            if budget.spent >= limits.budget_usd * Decimal(limits.soft_ratio):
                soft.append(scope)
            budget.reserved += reserve_usd
            budget.holds[token] = reserve_usd
            budget.expiring.append((now + RESERVATION_TTL, token))
            periods.append(budget.period)
        return Hold(tuple(scopes), reserve_usd, tuple(soft), token, tuple(periods), self)

    async def settle(self, hold: Hold, *, cost_usd: Decimal, tokens: int) -> None:
        """Count the real cost and tokens (a period's counter not seeded yet reads this cost from the ledger)."""
        if hold.settled:
            return
        hold.settled = True
        now = self._clock()
        for index, scope in enumerate(hold.scopes):
            counters, limits = self._of(scope), scope.limits
            period = hold.periods[index] if index < len(hold.periods) else ""
            if limits.tpm is not None and tokens > 0:
                counters.settled.append((now, tokens))
                counters.tokens += tokens
            if limits.budget_usd is None:
                continue
            budget = counters.budget
            if budget is not None and budget.period == period:
                budget.release(hold.token)
                budget.expire(now)
            if budget is not None and budget.current(budget_period(limits), now):
                budget.spent += cost_usd
            elif self._spent_since is None:  # no ledger to read it from later: this counter is the only record
                name, start, end = period_span(budget_period(limits), now)
                counters.budget = _Budget(name, start.timestamp(), end, cost_usd)

    async def close(self) -> None:
        """Nothing to release."""


def _copy(hold: Hold, token: str) -> Hold:
    return Hold(hold.scopes, hold.reserved_usd, hold.soft_exceeded, token, hold.periods)


class FallbackLimiter:
    """Redis's counters while Redis answers; this process's own (or refusals, `fail_closed`) while it does not.

    The first failure starts an outage: logged once; Redis is skipped for `retry_after` s at a time, and a fresh
    `MemoryLimiter` (seeded from the ledger) counts this process's requests until Redis answers an acquire again.
    `on_fallback()` is called for every acquire answered without Redis. Settles Redis did not take are counted in
    memory and kept (up to `backlog`) for Redis (one whose reply was lost is counted twice: never overspend).
    """

    def __init__(
        self,
        redis: RedisLimiter,
        *,
        fail_closed: bool = False,
        on_fallback: Callable[[], None] | None = None,
        retry_after: float = 1.0,
        backlog: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap `redis`; `clock` times the outages (the counters keep their own clocks)."""
        self._redis = redis
        self._fail_closed = fail_closed
        self._on_fallback = on_fallback
        self._retry_after, self._clock = retry_after, clock
        self._down_until: float | None = None  # while Redis is failing: when to try it again
        self._memory: MemoryLimiter | None = None
        self._unsent: deque[tuple[Hold, Decimal, int]] = deque(maxlen=backlog)

    def _failed(self, error: Exception) -> None:
        if self._down_until is None:
            mode = "refusing requests (fail_closed)" if self._fail_closed else "counting limits per process"
            logger.warning("limits: redis failed (%s: %s); %s until it answers", type(error).__name__, error, mode)
            self._memory = MemoryLimiter(spent_since=self._redis.spent_since, clock=self._redis.clock)
        self._down_until = self._clock() + self._retry_after

    async def _recovered(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            self._memory = None
            logger.info("limits: redis answers again; counting limits there")
        while self._unsent and self._down_until is None:  # until it is all sent, or Redis fails again
            hold, cost, tokens = self._unsent.popleft()
            try:
                await self._redis.record(hold, cost_usd=cost, tokens=tokens)
            except self._redis.failures as exc:
                self._unsent.appendleft((hold, cost, tokens))
                self._failed(exc)

    async def acquire(self, scopes: Sequence[Scope], *, reserve_usd: Decimal) -> Hold:
        """Admit through Redis; while it fails, through this process's counters (or refuse)."""
        if (down := self._down_until) is None or self._clock() >= down:
            if down is not None:  # this request tries Redis again; the others meanwhile go on without it
                self._down_until = self._clock() + self._retry_after
            try:
                hold = await self._redis.check(scopes, reserve_usd=reserve_usd)
            except self._redis.failures as exc:
                self._failed(exc)
            else:
                if self._down_until is not None or self._unsent:
                    await self._recovered()
                return hold
        if self._on_fallback is not None:
            self._on_fallback()
        if self._fail_closed or self._memory is None:
            raise Refused("unavailable")
        return await self._memory.acquire(scopes, reserve_usd=reserve_usd)

    async def settle(self, hold: Hold, *, cost_usd: Decimal, tokens: int) -> None:
        """Count in Redis (and in memory what was admitted there); what Redis did not take waits for it."""
        if hold.settled:
            return
        hold.settled = True
        ours = hold.issuer is self._redis
        if isinstance(hold.issuer, MemoryLimiter):  # admitted during an outage: its reservation is there
            await hold.issuer.settle(_copy(hold, hold.token), cost_usd=cost_usd, tokens=tokens)
        unsent = _copy(hold, hold.token if ours else "")  # Redis holds no reservation of a memory hold
        if self._down_until is None:
            try:
                await self._redis.record(unsent, cost_usd=cost_usd, tokens=tokens)
            except self._redis.failures as exc:
                self._failed(exc)
            else:
                return
        if ours and self._memory is not None:
            await self._memory.settle(_copy(hold, ""), cost_usd=cost_usd, tokens=tokens)
        self._unsent.append((unsent, cost_usd, tokens))

    async def close(self) -> None:
        """Close the Redis limiter."""
        await self._redis.close()
