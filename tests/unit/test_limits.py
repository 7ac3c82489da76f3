"""`MemoryLimiter` on a clock the test moves: windows, budgets with reservations, periods, seeding, refusals.

The behaviour both limiters share is pinned in tests/contract/test_limiter.py; these are the memory one's
details, and the period arithmetic both use.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from proxy.auth.limits import Limits, MemoryLimiter, Refused, Scope, period_span

USD = Decimal


class Clock:
    def __init__(self, when: datetime) -> None:
        self.at = when.timestamp()

    def __call__(self) -> float:
        return self.at


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


ALICE = Scope("key", "alice", Limits(budget_usd=USD("1.00"), period="month"))


async def refusal(limiter: MemoryLimiter, *scopes: Scope, reserve: str = "0") -> Refused:
    with pytest.raises(Refused) as caught:
        await limiter.acquire(scopes, reserve_usd=USD(reserve))
    return caught.value


@pytest.mark.parametrize(
    ("period", "now", "expected"),
    [
        ("day", at(2026, 12, 3, 13, 14, 15), ("d2026-12-03", at(2026, 12, 3), at(2026, 12, 4))),
        ("day", at(2026, 12, 31, 23, 59, 59), ("d2026-12-31", at(2026, 12, 31), at(2027, 1, 1))),
        ("day", at(2028, 2, 28, 12), ("d2028-02-28", at(2028, 2, 28), at(2028, 2, 29))),
        ("month", at(2026, 12, 3, 13), ("m2026-12", at(2026, 12, 1), at(2027, 1, 1))),
        ("month", at(2026, 1, 31, 23, 59), ("m2026-01", at(2026, 1, 1), at(2026, 2, 1))),
        ("month", at(2026, 2, 1), ("m2026-02", at(2026, 2, 1), at(2026, 3, 1))),
    ],
)
def test_periods_are_utc_days_and_months(period, now, expected):
    name, start, end = expected
    assert period_span(period, now.timestamp()) == (name, start, end.timestamp())


async def test_a_month_budget_starts_again_on_the_first():
    clock = Clock(at(2026, 11, 30, 23, 59))
    limiter = MemoryLimiter(clock=clock)
    hold = await limiter.acquire([ALICE], reserve_usd=USD("0.50"))
    await limiter.settle(hold, cost_usd=USD("1.00"), tokens=0)
    assert (await refusal(limiter, ALICE)).retry_after == 60.0
    clock.at = at(2026, 12, 1).timestamp()
    await limiter.acquire([ALICE], reserve_usd=USD("0.99"))


async def test_a_request_settled_in_the_next_period_is_spent_there():
    clock = Clock(at(2026, 11, 30, 23, 59, 59))
    limiter = MemoryLimiter(clock=clock)
    hold = await limiter.acquire([ALICE], reserve_usd=USD("0.90"))
    clock.at += 1
    started = await limiter.acquire([ALICE], reserve_usd=USD(0))  # December's counter starts at 0
    await limiter.settle(hold, cost_usd=USD("0.70"), tokens=0)
    await limiter.settle(started, cost_usd=USD("0.20"), tokens=0)
    await limiter.acquire([ALICE], reserve_usd=USD(0))  # 0.90 < 1.00
    await limiter.settle(await limiter.acquire([ALICE], reserve_usd=USD(0)), cost_usd=USD("0.10"), tokens=0)
    assert (await refusal(limiter, ALICE)).kind == "budget"


async def test_concurrent_first_requests_read_the_ledger_once():
    reads, release = [], asyncio.Event()

    async def spent_since(scope: Scope, since: datetime) -> Decimal:
        reads.append((scope.kind, scope.name, since))
        await release.wait()
        return USD("0.95")

    limiter = MemoryLimiter(spent_since=spent_since, clock=Clock(at(2026, 12, 3, 9)))
    blue = Scope("team", "blue", Limits(budget_usd=USD(10), period="day"))
    waiting = [asyncio.ensure_future(limiter.acquire([ALICE, blue], reserve_usd=USD("0.02"))) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert reads == [("key", "alice", at(2026, 12, 1)), ("team", "blue", at(2026, 12, 3))]
    # 0.95, 0.97, 0.99 are under the budget; 1.01 is not: three admitted, two refused, in any order.
    assert sorted(type(result).__name__ for result in results) == ["Hold"] * 3 + ["Refused"] * 2


async def test_a_ledger_that_fails_refuses_and_is_asked_again():
    answers: list[Decimal | Exception] = [OSError("database down"), USD("0.10")]

    async def spent_since(scope: Scope, since: datetime) -> Decimal:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    limiter = MemoryLimiter(spent_since=spent_since, clock=Clock(at(2026, 12, 3)))
    unavailable = await refusal(limiter, ALICE)
    assert (unavailable.kind, unavailable.scope, unavailable.retry_after) == ("unavailable", ALICE, None)
    assert isinstance(unavailable.__cause__, OSError)
    await limiter.acquire([ALICE], reserve_usd=USD("0.90"))
    assert (await refusal(limiter, ALICE)).kind == "budget"  # 0.10 from the ledger + 0.90 reserved


async def test_spend_settled_before_a_counter_is_seeded_is_left_to_the_ledger():
    """With a ledger, a period's first cost comes from it when the counter is seeded, not twice."""
    ledger = USD(0)

    async def spent_since(scope: Scope, since: datetime) -> Decimal:
        return ledger

    clock = Clock(at(2026, 11, 30, 23, 59, 59))
    limiter = MemoryLimiter(spent_since=spent_since, clock=clock)
    hold = await limiter.acquire([ALICE], reserve_usd=USD(0))
    clock.at += 1
    await limiter.settle(hold, cost_usd=USD("0.60"), tokens=0)  # December has no counter yet
    ledger = USD("0.60")  # the ledger wrote it
    await limiter.acquire([ALICE], reserve_usd=USD("0.40"))  # refused had it been counted twice
    assert (await refusal(limiter, ALICE)).kind == "budget"  # and admitted had it not been counted


async def test_without_a_ledger_a_first_settle_starts_the_counter():
    clock = Clock(at(2026, 11, 30, 23, 59, 59))
    limiter = MemoryLimiter(clock=clock)
    hold = await limiter.acquire([ALICE], reserve_usd=USD(0))
    clock.at += 1
    await limiter.settle(hold, cost_usd=USD("1.00"), tokens=0)
    assert (await refusal(limiter, ALICE)).kind == "budget"


async def test_zero_limits_refuse_everything():
    limiter = MemoryLimiter(clock=Clock(at(2026, 12, 3)))
    none_per_minute = await refusal(limiter, Scope("key", "a", Limits(rpm=0)))
    assert (none_per_minute.kind, none_per_minute.retry_after) == ("rpm", None)
    assert (await refusal(limiter, Scope("key", "b", Limits(budget_usd=USD(0))))).kind == "budget"
    assert (await refusal(limiter, Scope("key", "c", Limits(tpm=0)))).kind == "tpm"


async def test_tpm_says_when_enough_tokens_have_left_the_window():
    clock = Clock(at(2026, 12, 3))
    limiter, scope = MemoryLimiter(clock=clock), Scope("key", "t", Limits(tpm=100))
    for tokens in (40, 30, 20, 50):  # 90 before the last: 140 at the end
        hold = await limiter.acquire([scope], reserve_usd=USD(0))
        await limiter.settle(hold, cost_usd=USD(0), tokens=tokens)
        clock.at += 10
    assert (await refusal(limiter, scope)).retry_after == 30.0  # 140 - 40 - 30 = 70: when the second leaves
    clock.at += 30
    await limiter.acquire([scope], reserve_usd=USD(0))


async def test_a_refusal_names_its_scope_and_a_hold_its_own():
    limiter = MemoryLimiter(clock=Clock(at(2026, 12, 3)))
    hold = await limiter.acquire([ALICE], reserve_usd=USD("0.25"))
    assert (hold.scopes, hold.reserved_usd, hold.soft_exceeded, hold.periods) == (
        (ALICE,),
        USD("0.25"),
        (),
        ("m2026-12",),
    )
    assert hold.issuer is limiter
    other = await limiter.acquire([ALICE], reserve_usd=USD(0))
    assert other.token != hold.token
    assert str(Refused("rpm", ALICE, 3.0)) == "rpm limit of key 'alice'"
    assert str(Refused("unavailable")) == "limits unavailable"
