"""`Canaries` on every store: replicas that review at once move a canary once; rollbacks, commands, evidence."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from policies import Experiment
from proxy.auth.pairs import PairRow, PairStore
from proxy.canaries import Canaries
from proxy.parity.canary import Action, Status
from proxy.parity.settings import CanarySettings, GuardrailSettings, ParitySettings

PARITY = ParitySettings(reference="gpt4", evaluators=["exact"], margin=0.9, min_pairs=10)
CANARY = CanarySettings(
    candidate="ft35", steps=[10, 50, 100], min_pairs=5, guardrails=GuardrailSettings(error_rate=0.2, min_requests=5)
)
EXPERIMENTS = {"classify": Experiment(rule="classify", route="gpt4", parity=PARITY, canary=CANARY)}


async def replicas(pair_opener: Callable[[], PairStore], count: int) -> list[Canaries]:
    found = []
    for _ in range(count):
        database = pair_opener()
        await database.open()
        found.append(Canaries(EXPERIMENTS, database, ttl=0))
    return found


async def add_pairs(database: PairStore, outcome: str, count: int, version: int) -> None:
    for index in range(count):
        row = PairRow(datetime.now(UTC), f"r{version}-{index}", "classify", "ft35", "gpt4", outcome, "exact", version)
        await database.record_pair(row)


def healthy(canaries: Canaries, version: int, requests: int = 5) -> None:
    for _ in range(requests):
        canaries.observe("classify", version, failed=False, latency_ms=10, cost=None)


async def test_replicas_reviewing_at_once_advance_the_canary_one_step(pair_opener, caplog) -> None:
    caplog.set_level(logging.INFO, logger="turnout.canary")
    first, second, third = await replicas(pair_opener, 3)
    start = await first.standing("classify")
    assert (start.state.share, start.state.version) == (10, 0)
    await add_pairs(first._store, "tie", 43, 0)  # the sequential test passes 43 of 43 at 90% / 95%
    for canaries in (first, second, third):
        healthy(canaries, 0)
    events = await asyncio.gather(*(canaries.review("classify") for canaries in (first, second, third)))
    moved = [event for event in events if event is not None]
    assert len(moved) == 1
    assert (moved[0].action, moved[0].from_share, moved[0].to_share) == (Action.ADVANCE, 10, 50)
    for canaries in (first, second, third):
        state = (await canaries.standing("classify")).state
        assert (state.share, state.passed, state.version) == (50, (10,), 1)
    logged = [record.getMessage() for record in caplog.records if "advance" in record.getMessage()]
    assert len(logged) == 1
    assert '"pairs": 43' in logged[0]
    assert '"lower_bound": 0.9' in logged[0]


async def test_fewer_pairs_than_the_gate_needs_leave_it_where_it_is(pair_opener) -> None:
    (canaries,) = await replicas(pair_opener, 1)
    await canaries.standing("classify")
    await add_pairs(canaries._store, "tie", 42, 0)
    healthy(canaries, 0)
    assert await canaries.review("classify") is None
    assert canaries.verdict("classify") == "undecided"


async def test_a_failing_gate_and_a_guardrail_roll_back(pair_opener) -> None:
    (canaries,) = await replicas(pair_opener, 1)
    await canaries.standing("classify")
    await add_pairs(canaries._store, "tie", 43, 0)
    healthy(canaries, 0)
    await canaries.review("classify")  # at 50%
    for _ in range(4):
        canaries.observe("classify", 1, failed=False, latency_ms=10, cost=None)
    canaries.observe("classify", 1, failed=True, latency_ms=10, cost=None)
    assert await canaries.review("classify") is None  # 1 of 5 failed: 0.2 is not over 0.2
    canaries.observe("classify", 1, failed=True, latency_ms=10, cost=None)
    event = await canaries.review("classify")
    assert event is not None
    assert (event.action, event.to_share) == (Action.ROLLBACK, 10)
    assert event.reason.startswith("guardrail: error rate 0.333")
    resumed = await canaries.command("classify", Action.RESUME, who="ops")
    assert resumed is not None
    standing = await canaries.standing("classify")
    assert (standing.state.status, standing.since_version) == (Status.RUNNING, standing.state.version)
    await add_pairs(canaries._store, "loss", 10, standing.state.version)  # fresh evidence after a rollback
    event = await canaries.review("classify")
    assert event is not None
    assert (event.action, event.from_share, event.to_share) == (Action.ROLLBACK, 10, 10)  # 10% passed before
    assert event.reason.startswith("gate failed: 0 of 10 pairs")
    event = await canaries.review("classify")  # failing at the safe share too: it is no longer safe
    assert event is not None
    assert (event.action, event.to_share) == (Action.ROLLBACK, 0)


async def test_a_command_wins_over_a_stale_read_and_reset_starts_the_evidence_afresh(pair_opener) -> None:
    first, second = await replicas(pair_opener, 2)
    await first.standing("classify")
    await second.standing("classify")
    await add_pairs(first._store, "tie", 50, 0)
    pinned = await first.command("classify", Action.PIN, share=25)
    assert pinned is not None
    healthy(second, 0)
    assert await second.review("classify") is None  # it reads the pin: nothing automatic
    assert (await second.standing("classify")).state.share == 25
    await second.command("classify", Action.RESET)
    standing = await first.standing("classify")
    assert (standing.state.share, standing.state.status) == (10, Status.RUNNING)
    assert (await first.evidence(EXPERIMENTS["classify"], standing)).gate.pairs == 0
