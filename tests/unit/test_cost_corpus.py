"""The usage corpus against the price table: each hand computation equals its stated cost, and Turnout's price.

The same entries go through the whole proxy in `tests/e2e/test_cost_corpus.py`.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.accounting.cost import PriceTable
from tests.corpus import CORPUS, Entry, arithmetic


def test_the_corpus_covers_every_kind_of_usage() -> None:
    assert len(CORPUS) >= 30
    kinds = {entry.endpoint for entry in CORPUS}
    assert kinds == {"chat", "responses", "embeddings", "completions", "batch"}
    assert any(entry.as_usage().cached_tokens for entry in CORPUS)
    assert any(entry.as_usage().reasoning_tokens for entry in CORPUS)
    assert any(entry.model.startswith("ft:") for entry in CORPUS)
    assert {entry.service_tier for entry in CORPUS} >= {"flex", "priority"}
    assert any(
        entry.as_usage().prompt_tokens_details is not None and entry.as_usage().prompt_tokens_details.audio_tokens  # type: ignore[union-attr]
        for entry in CORPUS
    )
    assert len({entry.id for entry in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("entry", CORPUS, ids=lambda entry: entry.id)
def test_the_hand_arithmetic_gives_the_stated_cost(entry: Entry) -> None:
    assert arithmetic(entry.arithmetic) == entry.cost
    if entry.baseline_arithmetic is not None:
        assert arithmetic(entry.baseline_arithmetic) == entry.baseline_gpt4


@pytest.mark.parametrize("entry", CORPUS, ids=lambda entry: entry.id)
def test_the_price_table_gives_the_hand_computed_cost(entry: Entry) -> None:
    table = PriceTable(baseline_model="gpt-4")
    assert table.cost(entry.model, entry.as_usage(), entry.tier) == entry.cost
    if entry.baseline_gpt4 is not None:
        charge = table.charge(entry.model, entry.as_usage(), tier=entry.tier)
        assert charge is not None
        assert charge.baseline == entry.baseline_gpt4


def test_the_arithmetic_reader_takes_numbers_as_written_and_nothing_else() -> None:
    assert arithmetic("(3*0.1 - 0.3) / 1e6") == 0
    assert arithmetic("1024*0.138") == Decimal("141.312")
    with pytest.raises(ValueError, match="not plain arithmetic"):
        arithmetic("__import__('os')")
