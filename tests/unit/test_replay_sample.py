"""The `replay --execute` sample: the lowest hashes of the request ids, whatever order the log comes in."""

from __future__ import annotations

import hashlib
import random

from policies import Decision
from proxy.replay import Decided
from proxy.replay_sample import Sample, choose_sample
from tests.exchange_log import exchange


def decided(request_id: str) -> Decided:
    return Decided(exchange(request_id), Decision(route="r", rule="x", reason="y"), {}, "gpt-4o-mini")


def test_the_sample_is_the_lowest_hashes_in_any_order() -> None:
    items = [decided(f"req-{n}") for n in range(200)]
    expected = sorted(items, key=lambda d: hashlib.sha256(d.exchange.request_id.encode()).hexdigest())[:7]
    shuffled = items[:]
    random.Random(4).shuffle(shuffled)
    assert [d.exchange.request_id for d in choose_sample(items, 7)] == [d.exchange.request_id for d in expected]
    assert [d.exchange.request_id for d in choose_sample(shuffled, 7)] == [d.exchange.request_id for d in expected]
    smaller = {d.exchange.request_id for d in choose_sample(items, 3)}
    assert smaller <= {d.exchange.request_id for d in expected}
    assert len(smaller) == 3


def test_an_empty_sample_keeps_nothing() -> None:
    sample = Sample(0)
    sample.offer(decided("a"))
    assert sample.items() == []
    assert len(choose_sample([decided("a")], 5)) == 1
