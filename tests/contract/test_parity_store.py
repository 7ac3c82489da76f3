"""Every pair store (SQLite, PostgreSQL, Redis) keeps pairs and canaries alike, a canary by compare-and-set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from proxy.auth.pairs import CanaryRow, OutcomeCount, PairRow, PairStore

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
async def database(pair_opener: Callable[[], PairStore]) -> PairStore:
    db = pair_opener()
    await db.open()
    return db


def pair(outcome: str, version: int, *, rule: str = "classify", text: str | None = None) -> PairRow:
    return PairRow(
        at=NOW,
        request_id=f"req-{outcome}-{version}",
        rule=rule,
        candidate="ft35",
        reference="gpt4",
        outcome=outcome,
        evaluator="exact",
        canary_version=version,
        candidate_text=text,
        reference_text=text,
    )


def canary(version: int, share: int = 10, passed: tuple[int, ...] = ()) -> CanaryRow:
    return CanaryRow("classify", "ft35", share, passed, "running", version, 0, NOW)


async def test_pairs_are_counted_by_canary_version_and_outcome(database: PairStore) -> None:
    for row in (pair("tie", 1), pair("tie", 1), pair("loss", 1), pair("tie", 2, text="positive"), pair("tie", 0)):
        await database.record_pair(row)
    await database.record_pair(pair("tie", 2, rule="other"))
    await database.record_pair(replace(pair("tie", 2), judge_outcome="win"))
    counts = sorted(
        await database.pair_counts("classify", "ft35", 1),
        key=lambda c: (c.canary_version, c.outcome, c.judge_outcome or ""),
    )
    assert counts == [
        OutcomeCount(1, "loss", 1, "exact"),
        OutcomeCount(1, "tie", 2, "exact"),
        OutcomeCount(2, "tie", 1, "exact"),
        OutcomeCount(2, "tie", 1, "exact", "win"),
    ]
    assert sum(c.pairs for c in await database.pair_counts("classify", "ft35")) == 6
    assert await database.pair_counts("classify", "gpt35") == []


async def test_a_canary_is_created_once_and_changed_by_compare_and_set(pair_opener: Callable[[], PairStore]) -> None:
    first, second = pair_opener(), pair_opener()
    await first.open()
    await second.open()
    assert await first.canary("classify") is None
    assert await first.put_canary(canary(0), None)
    assert not await second.put_canary(canary(0, share=50), None)  # created already: the second must read it
    assert await second.canary("classify") == canary(0)
    # both read version 0; only one of them may move it
    assert await first.put_canary(canary(1, share=50, passed=(10,)), 0)
    assert not await second.put_canary(canary(1, share=25, passed=(10,)), 0)
    assert await second.canary("classify") == canary(1, share=50, passed=(10,))
    assert await second.canaries() == [canary(1, share=50, passed=(10,))]
