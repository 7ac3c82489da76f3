"""`proxy.billing.Billing`: the tier a request asked for, the counterfactual baseline, estimates; shadows' spend."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec

from policies.features import estimate_prompt_tokens
from proxy.accounting.cost import PriceTable
from proxy.accounting.tally import Tally
from proxy.billing import Billing, tier
from proxy.endpoints.chat import CHAT
from proxy.endpoints.embeddings import EMBEDDINGS
from proxy.wire.schemas import ChatMessage, Usage
from routes import Call
from tests.unit.test_pipeline import FakeRoute

QUESTION = "Which plan suits a team of forty people who mostly need reports?"
USED = msgspec.convert(
    {"prompt_tokens": 1000, "completion_tokens": 200, "prompt_tokens_details": {"cached_tokens": 512}}, Usage
)
TABLE = PriceTable(baseline_model="gpt-4")


def chat_call(**fields: object) -> Call[Any]:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": QUESTION}], **fields}
    return Call(endpoint=CHAT, body=CHAT.decode(json.dumps(body).encode()), headers={})


def billing() -> Billing:
    routes = {"gpt4": FakeRoute("gpt4"), "ft": FakeRoute("ft"), "mini": FakeRoute("mini")}
    return Billing(routes, baseline="gpt4", compared=frozenset({"chat", "responses"}))


def charged(route: str, model: str, usage: Usage = USED, tally: Tally | None = None, **fields: object) -> Tally:
    tally = tally or Tally()
    billing().account(TABLE, CHAT, chat_call(**fields), tally, route, model, usage)
    return tally


def test_an_answer_of_the_baseline_route_is_its_own_baseline() -> None:
    tally = charged("gpt4", "gpt-4-0613")
    assert tally.charge is not None
    assert tally.charge.baseline == tally.cost == Decimal("0.042")  # (1000*30 + 200*60) / 1e6
    assert tally.savings == 0


def test_a_model_counting_as_the_baseline_does_is_compared_on_the_upstream_s_count() -> None:
    tally = charged("ft", "ft:gpt-3.5-turbo-0613:acme::8Xyz")
    assert tally.cost == Decimal("0.0152")  # (1000*12 + 200*16) / 1e6
    assert tally.baseline == Decimal("0.042")  # the same 1,000 prompt tokens on gpt-4
    assert tally.savings == Decimal("0.0268")


def test_a_model_of_another_tokenizer_is_compared_on_the_client_s_prompt_estimated_for_the_baseline() -> None:
    tally = charged("mini", "gpt-4o-mini")
    own = estimate_prompt_tokens([ChatMessage(role="user", content=QUESTION)])
    assert 10 < own < 30
    assert tally.baseline == (Decimal(own) * 30 + 200 * 60) / 1_000_000
    assert tally.cost == (488 * Decimal("0.15") + 512 * Decimal("0.075") + 200 * Decimal("0.6")) / 1_000_000
    assert tally.savings == tally.baseline - tally.cost


def test_the_tier_the_request_asked_for_prices_answer_and_baseline() -> None:
    priority = charged(
        "mini", "gpt-4o-mini", usage=Usage(prompt_tokens=1000, completion_tokens=100), service_tier="priority"
    )
    assert priority.cost == Decimal("0.00035")  # (1000*0.25 + 100*1.00) / 1e6
    for asked in ("auto", "default", "scale"):
        assert tier(chat_call(service_tier=asked)) == "standard"
    assert tier(chat_call(service_tier="flex")) == "flex"
    assert tier(chat_call()) == "standard"


def test_a_request_of_a_kind_the_baseline_does_not_serve_is_its_own_baseline() -> None:
    body = EMBEDDINGS.decode(b'{"model": "text-embedding-3-small", "input": "hello"}')
    tally = Tally()
    call = Call(endpoint=EMBEDDINGS, body=body, headers={})
    billing().account(TABLE, EMBEDDINGS, call, tally, "mini", "text-embedding-3-small", Usage(prompt_tokens=1000))
    assert tally.cost == tally.baseline == Decimal("0.00002")


def test_a_shadow_copy_has_no_baseline_and_its_cost_is_negative_savings() -> None:
    tally = charged("ft", "ft:gpt-3.5-turbo-0613:acme::8Xyz", tally=Tally(shadow=True))
    assert tally.baseline == 0
    assert tally.savings == -Decimal("0.0152")


def test_the_embeddings_spent_for_a_request_lower_its_savings() -> None:
    tally = charged("gpt4", "gpt-4")
    tally.embedded(TABLE, "text-embedding-3-small", 1000)
    assert tally.cost == Decimal("0.04202")
    assert tally.savings == Decimal("-0.00002")  # baseline 0.042 - cost 0.04202


def test_a_stream_without_usage_is_estimated_and_marked() -> None:
    tally = Tally()
    billing().estimate(TABLE, CHAT, chat_call(), tally, "gpt4", 25)
    assert tally.estimated
    assert tally.usage is not None
    assert tally.usage.completion_tokens == 25
    assert tally.usage.prompt_tokens == estimate_prompt_tokens([ChatMessage(role="user", content=QUESTION)])
