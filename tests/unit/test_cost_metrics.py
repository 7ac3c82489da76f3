"""The money metrics add up: `savings - overspend = baseline - cost` over requests, shadows and embeddings at load."""

from __future__ import annotations

import math
from decimal import Decimal

from proxy.accounting.cost import PriceTable
from proxy.accounting.metrics import Metrics
from proxy.accounting.tally import Embedding, Tally
from proxy.wire.schemas import Usage

TABLE = PriceTable(baseline_model="gpt-4")


def finished(route: str, model: str, usage: Usage, *, shadow: bool = False, estimated: bool = False) -> Tally:
    tally = Tally(routed=True, endpoint="chat", shadow=shadow, status=200)
    tally.decided(route, "default")
    tally.charge_for(TABLE, model, usage, estimated=estimated)
    tally.ended_at = tally.started
    return tally


def totals(metrics: Metrics) -> dict[str, float]:
    metrics.flush()
    found: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


def test_savings_minus_overspend_is_baseline_minus_cost_over_every_kind_of_spend() -> None:
    metrics = Metrics()
    cheap = finished("ft", "ft:gpt-3.5-turbo-0613:a::b", Usage(prompt_tokens=1000, completion_tokens=100))
    dear = finished("big", "gpt-4-32k", Usage(prompt_tokens=1000, completion_tokens=100))
    with_embeddings = finished("ft", "ft:gpt-3.5-turbo-0613:a::b", Usage(prompt_tokens=10, completion_tokens=10))
    with_embeddings.embedded(TABLE, "text-embedding-3-large", 10_000)
    shadow = finished("big", "gpt-4-32k", Usage(prompt_tokens=500, completion_tokens=50), shadow=True)
    cut = finished("ft", "ft:gpt-3.5-turbo-0613:a::b", Usage(prompt_tokens=20, completion_tokens=5), estimated=True)
    for tally in (cheap, dear, with_embeddings, shadow, cut):
        metrics.record(tally)
    metrics.embedded(Embedding(model="text-embedding-3-small", tokens=5000, cost=Decimal("0.0001")))  # at load

    found = totals(metrics)
    cost, baseline = found["turnout_cost_usd_total"], found["turnout_baseline_cost_usd_total"]
    saved, overspent = found["turnout_savings_usd_total"], found["turnout_overspend_usd_total"]
    assert math.isclose(saved - overspent, baseline - cost, abs_tol=1e-12)
    spend = [tally.cost or Decimal(0) for tally in (cheap, dear, with_embeddings, shadow, cut)]
    assert math.isclose(cost, float(sum(spend, Decimal("0.0001"))), rel_tol=1e-12)
    assert math.isclose(found["turnout_cost_estimated_usd_total"], float(cut.cost or 0), rel_tol=1e-12)
    assert shadow.cost is not None
    assert shadow.baseline == 0
    assert math.isclose(found["turnout_embedding_cost_usd_total"], 0.0013 + 0.0001, rel_tol=1e-12)
