"""`Access`: this process's keys, limits and spend ledger, opened once (`open_access`) while keys are on.

The gate (`proxy.gate`) asks it who a request comes from (`identify`), lets the request in within its
key's and team's limits (`admit`), and settles what it cost when it has ended (`settle`). The keys come
from the `KeyRing` (the database's keys, in memory, polled for changes), the limits from the key itself and
the policy's `auth.teams`, counted by a `Limiter` (in Redis, shared by every replica, when one is configured,
else in this process), and the spend goes to the `Ledger` (the database, written in batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec
from litestar.types import Scope

from proxy.auth.attempts import FailedAttempts, presented_key
from proxy.auth.keyring import KeyRing
from proxy.auth.keys import KeyRecord
from proxy.auth.ledger import Ledger
from proxy.auth.limits import FallbackLimiter, Hold, Limiter, Limits, MemoryLimiter, Refused
from proxy.auth.limits import Scope as LimitScope
from proxy.auth.store import Database, DatabaseError, SpendEntry, open_database
from proxy.config.sections import AuthSettings
from proxy.config.settings import Secret, Settings
from proxy.tasks import BackgroundTasks
from proxy.wire.errors import (
    AuthenticationError,
    PermissionDeniedError,
    ProxyError,
    QuotaExceededError,
    RateLimitError,
    TokenRateLimitError,
)

if TYPE_CHECKING:
    from proxy.accounting.recorder import Recorder
    from proxy.accounting.tally import Tally

__all__ = ["Access", "Identity", "open_access"]

logger = logging.getLogger("turnout.auth")

_MISSING = (
    "You didn't provide an API key. You need to provide your Turnout key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_INVALID = "Incorrect API key provided. Ask your Turnout administrator for a key (turnout keys create)."


@dataclass(slots=True)
class Identity:
    """Who a request comes from, when keys are on: its key, and the limits it counts against."""

    key: KeyRecord
    scopes: tuple[LimitScope, ...]
    """The key's own limits and its team's, those that limit anything."""
    hold: Hold | None = None
    """What the request was admitted with (None: no limits): settled when its response ends."""
    admitted: bool = False
    """Let in within its limits: what it spends goes to the ledger (a refused or malformed request spends nothing)."""


class Access:
    """This process's keys, limits and ledger, open while `auth: keys` is (or the admin API is) on."""

    def __init__(
        self,
        *,
        database: Database,
        keyring: KeyRing,
        limiter: Limiter,
        ledger: Ledger,
        settings: AuthSettings,
        admin_key: Secret | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.database, self.keyring, self.limiter, self.ledger = database, keyring, limiter, ledger
        self.settings = settings
        """The running policy's `auth` block (its teams' limits follow a reload; its mode does not)."""
        self._admin = hashlib.sha256(admin_key.reveal().encode()).digest() if admin_key is not None else None
        self._recorder = recorder
        self._attempts = FailedAttempts(settings.failed_attempts)
        self._recheck = asyncio.Lock()
        self._settling = BackgroundTasks()
        """The settlements of ended requests: off the request path, waited for at close."""

    @property
    def admin_enabled(self) -> bool:
        """Whether the admin API is on (`TURNOUT_ADMIN_KEY` is set)."""
        return self._admin is not None

    def check_admin(self, scope: Scope) -> None:
        """The request holds the admin key (compared in constant time).

        Raises:
            RateLimitError: it does not, from an address that failed too many key checks in the last minute.
            AuthenticationError: it does not.
        """
        presented = presented_key(scope["headers"])
        digest = hashlib.sha256(presented).digest()
        if self._admin is None or not presented or not hmac.compare_digest(digest, self._admin):
            address = self._throttled(scope)
            self._attempts.failed(address)
            self._auth_failed("missing" if not presented else "invalid")
            raise AuthenticationError(_MISSING if not presented else "Incorrect admin key provided.")

    def _throttled(self, scope: Scope) -> str:
        """The client's address, unless it failed too many key checks in the last minute.

        Raises:
            RateLimitError: it did.
        """
        address = _address(scope)
        wait = self._attempts.blocked(address)
        if wait is not None:
            self._auth_failed("throttled")
            raise RateLimitError(
                "Too many requests with an invalid API key from this address. Please try again later.",
                headers={"retry-after": str(max(1, round(wait)))},
            )
        return address

    def scopes_for(self, key: KeyRecord) -> tuple[LimitScope, ...]:
        """The key's own limits and its team's (from the policy's `auth.teams`), those that limit anything."""
        scopes = []
        soft = self.settings.soft_budget
        own = Limits(rpm=key.rpm, tpm=key.tpm, budget_usd=key.budget_usd, period=key.period, soft_ratio=soft)
        if _limits_anything(own):
            scopes.append(LimitScope(kind="key", name=key.name, limits=own))
        team = self.settings.teams.get(key.team) if key.team is not None else None
        if team is not None and key.team is not None:
            budget = Decimal(str(team.budget_usd)) if team.budget_usd is not None else None
            limits = Limits(rpm=team.rpm, tpm=team.tpm, budget_usd=budget, period=team.period, soft_ratio=soft)
            if _limits_anything(limits):
                scopes.append(LimitScope(kind="team", name=key.team, limits=limits))
        return tuple(scopes)

    async def identify(self, scope: Scope) -> Identity:
        """The key the request presents, found and valid.

        A valid key always gets in. A key the ring does not know may have been made a moment ago (by `turnout
        keys create`, on another replica): unless the ring was confirmed current after the request arrived, it
        looks at the database once more before refusing (one look at a time, which every request waiting then
        shares). An address that failed too many checks in the last minute is refused without that look.

        Raises:
            RateLimitError: no valid key, from an address that failed too many key checks in the last minute.
            AuthenticationError: no key, or not a valid one.
        """
        arrived = time.monotonic()
        presented = presented_key(scope["headers"])
        key = self.keyring.find(presented) if presented else None
        if key is not None:
            return Identity(key=key, scopes=self.scopes_for(key))
        address = self._throttled(scope)
        if presented and await self._confirmed_since(arrived):
            key = self.keyring.find(presented)
        if key is None:
            self._attempts.failed(address)
            self._auth_failed("missing" if not presented else "invalid")
            raise AuthenticationError(_MISSING if not presented else _INVALID)
        return Identity(key=key, scopes=self.scopes_for(key))

    async def _confirmed_since(self, arrived: float) -> bool:
        """Make sure the key ring was confirmed current after `arrived` (False: the database could not say)."""
        async with self._recheck:
            age = self.keyring.age()
            if age is not None and time.monotonic() - age >= arrived:  # another request looked meanwhile
                return True
            try:
                await self.keyring.refresh()
            except DatabaseError:
                return False
            return True

    def forbidden(self, what: str) -> PermissionDeniedError:
        """A valid key asked for something it may not use (the route or model named in `what`)."""
        self._auth_failed("forbidden")
        return PermissionDeniedError(f"This key may not use {what}.")

    async def admit(self, identity: Identity, *, reserve: Callable[[], Decimal] | None = None) -> None:
        """Count the request against its limits, reserving what `reserve()` says the answer may cost of its budgets.

        `reserve` is called only when a scope has a budget (None: nothing to reserve).

        Raises:
            RateLimitError: over requests (or tokens) per minute, with `retry-after`.
            QuotaExceededError: a budget is spent for the period.
            ProxyError: 503, the limits' store is unreachable and `fail_closed` is on.
        """
        if not identity.scopes:
            identity.admitted = True
            return
        budgeted = reserve is not None and any(scope.limits.budget_usd is not None for scope in identity.scopes)
        reserve_usd = reserve() if budgeted and reserve is not None else Decimal(0)
        try:
            hold = await self.limiter.acquire(identity.scopes, reserve_usd=reserve_usd)
        except Refused as refused:
            if self._recorder is not None:
                scope = refused.scope
                self._recorder.limit_refused(scope.kind if scope else "none", scope.name if scope else "", refused.kind)
            raise _refusal_error(refused) from None
        identity.hold, identity.admitted = hold, True
        if hold.soft_exceeded and self._recorder is not None:
            for scope in hold.soft_exceeded:
                self._recorder.budget_soft_exceeded(scope.kind, scope.name)

    def settle_soon(self, identity: Identity, tally: Tally) -> None:
        """The request has ended: settle it in the background (its counters are one Redis call away)."""
        self._settling.spawn(self.settle(identity, tally), name="turnout-settle")

    async def close(self, grace: float = 10.0) -> None:
        """Wait (up to `grace` s) for the settlements under way, before the limiter and the ledger close."""
        await self._settling.drain(grace)

    async def settle(self, identity: Identity, tally: Tally) -> None:
        """The request has ended: its real cost and tokens replace its reservation, and go to the ledger."""
        cost = tally.cost or Decimal(0)
        usage = tally.usage
        if identity.hold is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
            await self.limiter.settle(identity.hold, cost_usd=cost, tokens=tokens)
        if not identity.admitted:
            return
        key = identity.key
        entry = SpendEntry(
            at=datetime.datetime.now(datetime.UTC),
            key=key.name,
            team=key.team,
            route=tally.route,
            endpoint=tally.endpoint or "other",
            model=tally.model,
            cost_usd=cost,
            input_tokens=usage.prompt_tokens if usage is not None else 0,
            output_tokens=usage.completion_tokens if usage is not None else 0,
            cache_hit=tally.cache == "hit",
            request_id=tally.request_id,
        )
        if not self.ledger.add(entry) and self._recorder is not None:
            self._recorder.ledger_dropped()

    async def shadow_spent(self, team: str | None, cost: Decimal) -> None:
        """A shadow copy of a request by `team`'s key cost `cost`: the team's budget pays with `shadow_spend`."""
        limits = self.settings.teams.get(team) if team is not None and self.settings.shadow_spend else None
        if team is None or limits is None or limits.budget_usd is None or cost <= 0:
            return
        budget = Limits(budget_usd=Decimal(str(limits.budget_usd)), period=limits.period)
        hold = Hold(
            scopes=(LimitScope(kind="team", name=team, limits=budget),), reserved_usd=Decimal(0), soft_exceeded=()
        )
        await self.limiter.settle(hold, cost_usd=cost, tokens=0)

    def _auth_failed(self, reason: str) -> None:
        if self._recorder is not None:
            self._recorder.auth_failed(reason)


def _limits_anything(limits: Limits) -> bool:
    return limits.rpm is not None or limits.tpm is not None or limits.budget_usd is not None


def _refusal_error(refused: Refused) -> ProxyError:
    scope = refused.scope
    whose = f"{scope.kind} '{scope.name}'" if scope is not None else "this key"
    retry = {"retry-after": str(max(1, round(refused.retry_after)))} if refused.retry_after is not None else {}
    if refused.kind == "budget":
        limits = scope.limits if scope is not None else None
        period = limits.period if limits is not None and limits.period else "period"
        message = f"You exceeded your current quota: the {period}'s budget of {whose} is spent."
        return QuotaExceededError(message, headers={**retry, "x-should-retry": "false"})
    if refused.kind == "unavailable":
        return ProxyError("Rate limits cannot be checked right now.", code="limits_unavailable", status_code=503)
    limit = scope.limits.rpm if refused.kind == "rpm" and scope is not None else scope.limits.tpm if scope else None
    unit = "requests per min (RPM)" if refused.kind == "rpm" else "tokens per min (TPM)"
    wait = f" Please try again in {retry['retry-after']}s." if retry else ""
    message = f"Rate limit reached for {whose} on {unit}: Limit {limit}.{wait}"
    error_class = RateLimitError if refused.kind == "rpm" else TokenRateLimitError
    return error_class(message, headers=retry)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


@contextlib.asynccontextmanager
async def open_access(
    settings: Settings, tasks: BackgroundTasks, recorder: Recorder | None = None
) -> AsyncIterator[Access | None]:
    """The keys, limits and ledger, open for the app's life (None: keys are off and the admin API too).

    The database is migrated on opening; the ledger is flushed on closing, so a restart loses no spend.
    """
    deployment = settings.deployment
    auth = deployment.auth
    if not auth.keys and settings.admin_key is None:
        yield None
        return
    database = open_database(deployment.database_url)
    await database.open()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(database.close)
        logger.info("keys and spend in %s", database.display_url)
        limiter = _limiter(settings, database, recorder, stack)
        stack.push_async_callback(limiter.close)
        keyring = KeyRing(database, refresh=auth.refresh)
        await keyring.start(tasks)
        stack.push_async_callback(keyring.close)
        ledger = Ledger(database)
        await ledger.start(tasks)
        stack.push_async_callback(ledger.close)
        access = Access(
            database=database,
            keyring=keyring,
            limiter=limiter,
            ledger=ledger,
            settings=auth,
            admin_key=settings.admin_key,
            recorder=recorder,
        )
        stack.push_async_callback(access.close)
        yield access


def _limiter(
    settings: Settings, database: Database, recorder: Recorder | None, stack: contextlib.AsyncExitStack
) -> Limiter:
    """Redis (the `auth.redis_url`, else the cache's), falling back to this process when it fails; else memory."""
    deployment = settings.deployment
    cache = deployment.cache
    url = deployment.auth.redis_url or (cache.url if cache.uses_redis else None)

    async def spent_since(scope: LimitScope, since: datetime.datetime) -> Decimal:
        if scope.kind == "key":
            return await database.spent(since=since, key=scope.name)
        return await database.spent(since=since, team=scope.name)

    if url is None:
        return MemoryLimiter(spent_since=spent_since)
    from proxy.auth.limits_redis import RedisLimiter  # only with Redis: redis-py is slow to import
    from proxy.cache.redis import redis_client

    timeout = deployment.auth.redis_timeout
    client = redis_client(url, msgspec.structs.replace(cache, timeout=timeout, connect_timeout=timeout))
    stack.push_async_callback(client.aclose, close_connection_pool=True)
    redis = RedisLimiter(client, prefix=cache.key_prefix, spent_since=spent_since, timeout=timeout)
    on_fallback = recorder.limits_fell_back if recorder is not None else None
    return FallbackLimiter(redis, fail_closed=deployment.auth.fail_closed, on_fallback=on_fallback)
