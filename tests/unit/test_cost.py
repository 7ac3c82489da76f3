"""`proxy.accounting.cost`: shipped prices, lookup by snapshot and fine-tune prefix, overrides, charges in Decimal."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from proxy.accounting.cost import SHIPPED_PRICES, SHIPPED_RATES, Charge, ModelPrice, PriceTable, cost_usd, tokenizer_of
from proxy.accounting.prices import PRICES_VERSION
from proxy.accounting.tally import Tally, usd
from proxy.config.sections import Price, TierPrice
from proxy.wire.schemas import Usage

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
THOUSAND_EACH = Usage(prompt_tokens=1000, completion_tokens=1000, total_tokens=2000)


def test_the_issue_s_prices_fine_tuned_gpt_3_5_against_gpt_4():
    assert PriceTable().price(FT) == ModelPrice(Decimal("0.012"), Decimal("0.016"))
    assert PriceTable().price("gpt-4") == ModelPrice(Decimal("0.03"), Decimal("0.06"))


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4", "gpt-4"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4-32k-0613", "gpt-4-32k"),
        ("gpt-4-1106-preview", "gpt-4-1106-preview"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        (FT, "ft:gpt-3.5-turbo"),
        ("ft:gpt-3.5-turbo:acme::abc", "ft:gpt-3.5-turbo"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc", "ft:gpt-4o-mini"),
        ("gpt-4x", None),
        ("llama-3-70b", None),
        ("", None),
    ],
)
def test_a_model_is_priced_by_its_name_or_its_longest_family_prefix(model, entry):
    assert PriceTable().entry(model) == entry


def test_cost_is_exact_decimal_arithmetic():
    usage = Usage(prompt_tokens=4, completion_tokens=12, total_tokens=16)
    assert cost_usd(FT, usage) == Decimal("0.00024")
    assert cost_usd("gpt-4", usage) == Decimal("0.00084")
    assert cost_usd("gpt-4", THOUSAND_EACH) == Decimal("0.09")
    assert cost_usd("gpt-4o-mini", Usage(prompt_tokens=1, completion_tokens=0)) == Decimal("0.00000015")


def test_an_unknown_model_has_no_cost():
    assert PriceTable().cost("llama-3-70b", THOUSAND_EACH) is None
    with pytest.raises(KeyError, match="llama"):
        cost_usd("llama-3-70b", THOUSAND_EACH)


def test_the_policy_file_s_prices_override_and_extend_the_table():
    table = PriceTable({"gpt-4": Price(input=0.01, output=0.02), "llama-3-70b": Price(input=0.0009, output=0.0009)})
    assert table.cost("gpt-4-0613", THOUSAND_EACH) == Decimal("0.03")
    assert table.cost("llama-3-70b", THOUSAND_EACH) == Decimal("0.0018")
    assert PriceTable().cost("gpt-4", THOUSAND_EACH) == Decimal("0.09")  # the shipped table is untouched


def test_savings_are_counted_against_the_baseline_route_s_model():
    table = PriceTable(baseline_model="gpt-4")
    charge = table.charge(FT, THOUSAND_EACH)
    assert charge == Charge(cost=Decimal("0.028"), baseline=Decimal("0.09"))
    assert charge.savings == Decimal("0.062")
    assert table.charge("gpt-4-32k", THOUSAND_EACH) == Charge(cost=Decimal("0.18"), baseline=Decimal("0.09"))


def test_a_cache_hit_costs_nothing_and_saves_its_whole_baseline_cost():
    charge = PriceTable(baseline_model="gpt-4").charge(FT, THOUSAND_EACH, cached=True)
    assert charge == Charge(cost=Decimal(0), baseline=Decimal("0.09"))
    assert charge.savings == Decimal("0.09")


def test_without_a_baseline_an_answer_is_its_own_baseline():
    charge = PriceTable().charge(FT, THOUSAND_EACH)
    assert charge is not None
    assert charge.savings == 0
    assert PriceTable().charge("llama", THOUSAND_EACH) is None


def test_labels_come_from_the_routes_and_the_table_only():
    table = PriceTable(known_models=[FT])
    assert table.label(FT) == FT
    assert table.label("ft:gpt-3.5-turbo-0613:someone-else::zzz") == "ft:gpt-3.5-turbo"
    assert table.label("gpt-4-0613") == "gpt-4"
    assert table.label("anything a client made up") == "other"


def test_embeddings_are_priced_by_input_tokens_and_the_local_model_is_free():
    table = PriceTable()
    assert table.cost("text-embedding-3-small", Usage(prompt_tokens=1000)) == Decimal("0.00002")
    tally = Tally()
    tally.charge_for(table, "gpt-4", Usage(prompt_tokens=1000, completion_tokens=0))
    tally.embedded(table, "text-embedding-3-small", 5000)
    tally.embedded(table, "wordllama", 20)
    assert tally.cost == Decimal("0.0301")
    assert tally.savings == Decimal("-0.0001")  # the embeddings are spend with no baseline of their own


def test_every_shipped_price_is_a_non_negative_decimal():
    assert all(price.input >= 0 and price.output >= 0 for price in SHIPPED_PRICES.values())


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.000240"), "0.00024"),
        (Decimal(0), "0"),
        (Decimal("-0.0012"), "-0.0012"),
        (Decimal("1E-8"), "0.00000001"),
    ],
)
def test_usd_amounts_are_plain_decimals(amount, text):
    assert usd(amount) == text


def details(prompt: int, completion: int, *, cached: int = 0, audio_in: int = 0, audio_out: int = 0) -> Usage:
    return msgspec.convert(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": audio_out},
        },
        Usage,
    )


def test_cached_tokens_are_billed_at_the_cached_rate_where_the_model_has_one() -> None:
    assert cost_usd("gpt-4o", details(1000, 0, cached=600)) == Decimal("0.00175")  # (400*2.5 + 600*1.25) / 1e6
    assert cost_usd("gpt-4", details(1000, 0, cached=600)) == Decimal("0.03")  # no cached rate: the input rate
    assert cost_usd("gpt-4o", details(10, 0, cached=99)) == Decimal("0.0000125")  # never more than the prompt


def test_audio_tokens_are_billed_at_the_audio_rates() -> None:
    usage = details(100, 100, audio_in=60, audio_out=50)
    assert cost_usd("gpt-4o-audio-preview", usage) == Decimal("0.007")  # (40*2.5 + 60*40 + 50*10 + 50*80) / 1e6


def test_tiers_batch_flex_and_priority() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert cost_usd("gpt-4o", usage, tier="batch") == Decimal("6.25")
    assert cost_usd("gpt-4o", usage, tier="priority") == Decimal("21.25")
    assert cost_usd("gpt-4o", usage, tier="flex") == Decimal("12.5")  # no flex for gpt-4o: standard
    assert cost_usd("o3", usage, tier="flex") == cost_usd("o3", usage, tier="batch") == Decimal("5")
    assert cost_usd("ft:gpt-4o-mini-2024-07-18:acme::x", usage, tier="batch") == Decimal("0.75")


def test_the_policy_file_prices_cached_input_and_tiers_too() -> None:
    price = Price(input=0.001, output=0.002, cached_input=0.0001, priority=TierPrice(input=0.002, output=0.004))
    table = PriceTable({"ft:gpt-4o-mini": price})
    model = "ft:gpt-4o-mini-2024-07-18:acme::x"
    assert table.cost(model, details(1000, 1000, cached=500)) == Decimal("0.00255")  # 0.0005 + 0.00005 + 0.002
    assert table.cost(model, details(1000, 1000), "priority") == Decimal("0.006")
    assert table.cost(model, details(1000, 1000), "batch") == Decimal("0.0015")  # half, when not given
    assert table.version.endswith("+policy")
    assert PriceTable().version == PRICES_VERSION


def test_tokenizers_by_model_family() -> None:
    assert tokenizer_of("gpt-4-0613") == tokenizer_of("ft:gpt-3.5-turbo-0613:a::b") == "cl100k_base"
    assert tokenizer_of("gpt-4o-mini") == tokenizer_of("o3-mini") == tokenizer_of("ft:gpt-4.1:a::b") == "o200k_base"
    assert tokenizer_of("llama-3") is None


def test_the_shipped_data_parses_and_every_tier_is_no_dearer_than_priority() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=1000)
    for model in SHIPPED_RATES:
        standard = cost_usd(model, usage)
        assert cost_usd(model, usage, tier="batch") <= standard <= cost_usd(model, usage, tier="priority")
        assert cost_usd(model, usage, tier="flex") <= standard
