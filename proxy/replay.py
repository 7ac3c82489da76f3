"""`Replay`: logged exchanges decided again by a candidate policy, and what its routes would cost, no upstream called.

Each logged conversation (chat completions and Responses: the kinds rules are written for) is decoded as
the server decodes it and decided as the server decides it (`proxy.decide.decide_semantically`, the
same function `turnout explain` and `turnout test` use; the meaning-based conditions embed with the
candidate's embedder). The request's headers are not in the log: a rule on a header sees none.

What it would have cost (`Replay.add`), with the candidate's price table (`proxy.accounting.cost`):

    projected = price(candidate route's model, logged usage, the request's service tier)
                (0 when the logged answer was a cache hit and the route did not change: it would still be)
    current   = the logged cost (else the logged usage priced on the logged model)
    baseline  = the logged baseline (else the logged usage on the candidate's baseline model, else current)
    savings vs baseline = baseline - projected;   savings vs current = current - projected

A route's model is its `model`, else that of the route it answers with (RAG), else the caller's own.
The logged usage is the answering model's count: a route of another tokenizer, or one that adds passages
(RAG), would be billed for a somewhat different prompt; the figures are projections, not bills.

A request is moved when the candidate's route is not the one the logged policy chose (the first of the
logged `fallbacks` when the exchange fell back, else the logged route).

Exchanges that cannot be decided are counted by why: no content logged (the request body is needed to
decide), an endpoint rules do not decide (embeddings, legacy completions), a body the server would refuse;
a decided exchange without usage (an error) or whose model has no price is counted as unpriced.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from policies import Decision
from proxy.accounting.cost import PriceTable, tier_of
from proxy.config.settings import Settings
from proxy.decide import decide_semantically
from proxy.endpoints.base import Codec
from proxy.endpoints.chat import CHAT
from proxy.endpoints.responses import RESPONSES
from proxy.semantic import SemanticScorer
from proxy.traffic.record import Exchange
from proxy.wire.errors import InvalidRequestError
from proxy.wire.schemas import Usage
from routes import Call

__all__ = ["CODECS", "Decided", "Replay", "RouteTotals", "route_model", "usage_of"]

CODECS: Mapping[str, Codec[Any]] = {"chat.completions": CHAT, "responses": RESPONSES}
"""The logged endpoints whose requests the rules decide, and how each is decoded."""
_ZERO = Decimal(0)


def usage_of(raw: Mapping[str, Any] | None) -> Usage | None:
    """The logged usage as the price table reads it (a Responses usage's `input_tokens` are prompt tokens)."""
    if not raw:
        return None
    try:
        if "input_tokens" in raw:
            cached = (raw.get("input_tokens_details") or {}).get("cached_tokens", 0)
            reasoning = (raw.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
            raw = {
                "prompt_tokens": raw["input_tokens"],
                "completion_tokens": raw.get("output_tokens", 0),
                "total_tokens": raw.get("total_tokens", 0),
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            }
        return msgspec.convert(raw, Usage)
    except (msgspec.ValidationError, AttributeError, KeyError, TypeError):
        return None


def route_model(settings: Settings, route: str) -> str | None:
    """The upstream model `route` asks for: its own, else that of the route it answers with; None: the caller's."""
    routes = settings.deployment.routes
    seen: set[str] = set()
    while route in routes and route not in seen:
        seen.add(route)
        entry = routes[route]
        if entry.model is not None:
            return entry.model
        if entry.answers_with is None:
            return None
        route = entry.answers_with
    return None


@dataclass(slots=True)
class RouteTotals:
    """The figures of one (rule, route) of the candidate: requests, those moved to it, and money (USD)."""

    requests: int = 0
    moved: int = 0
    """Requests the logged policy had sent to another route."""
    projected: Decimal = _ZERO
    current: Decimal = _ZERO
    baseline: Decimal = _ZERO
    unpriced: int = 0
    """Requests in the row without usage or whose model has no price (in `requests`, not in the money)."""

    @property
    def savings_vs_baseline(self) -> Decimal:
        """Baseline minus projected."""
        return self.baseline - self.projected

    @property
    def savings_vs_current(self) -> Decimal:
        """Current (logged) minus projected."""
        return self.current - self.projected


@dataclass(frozen=True, slots=True)
class Decided:
    """One logged exchange decided by the candidate: its decision, the request decoded, and its model."""

    exchange: Exchange
    decision: Decision
    body: Mapping[str, Any]
    model: str | None
    """The model the candidate's route would ask for (None: unknown; the caller's own, not in the body)."""


@dataclass(slots=True)
class Replay:
    """The replay of a log through a candidate: the totals by (rule, route), and what could not be replayed."""

    settings: Settings
    prices: PriceTable
    scorer: SemanticScorer | None = None
    rows: dict[tuple[str, str], RouteTotals] = field(default_factory=dict)
    flows: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(logged route, candidate route) → requests, for the moved ones."""
    undecided: Counter[str] = field(default_factory=Counter)
    """Why exchanges were not decided: `no content`, `endpoint embeddings`, `invalid request`."""
    unpriced_models: Counter[str] = field(default_factory=Counter)

    @property
    def decided(self) -> int:
        """Exchanges decided by the candidate."""
        return sum(row.requests for row in self.rows.values())

    def total(self) -> RouteTotals:
        """Every row summed."""
        total = RouteTotals()
        for row in self.rows.values():
            total.requests += row.requests
            total.moved += row.moved
            total.projected += row.projected
            total.current += row.current
            total.baseline += row.baseline
            total.unpriced += row.unpriced
        return total

    async def decide(self, exchange: Exchange) -> Decided | None:
        """The candidate's decision on `exchange` (None, counted in `undecided`, when it cannot be decided)."""
        codec = CODECS.get(exchange.endpoint)
        if codec is None:
            self.undecided[f"endpoint {exchange.endpoint}"] += 1
            return None
        if exchange.request is None:
            self.undecided["no content"] += 1
            return None
        body = dict(exchange.request)
        try:
            decoded = codec.decode(json.dumps(body).encode())
        except InvalidRequestError:
            self.undecided["invalid request"] += 1
            return None
        call = Call(endpoint=codec, body=decoded, headers={}, caller=exchange.caller, team=exchange.team)
        deployment = self.settings.deployment
        decision = await decide_semantically(
            codec,
            call,
            policy=deployment.policy,
            named=deployment.model_names(),
            default_route=next(iter(deployment.routes)),
            scorer=self.scorer,
        )
        model = route_model(self.settings, decision.route) or codec.requested_model(decoded) or None
        return Decided(exchange=exchange, decision=decision, body=body, model=model)

    def add(self, decided: Decided) -> None:
        """Count `decided` in its (rule, route) row, priced as the module docstring says."""
        exchange, decision = decided.exchange, decided.decision
        row = self.rows.setdefault((decision.rule, decision.route), RouteTotals())
        row.requests += 1
        logged = exchange.fallbacks[0] if exchange.fallbacks else exchange.route  # the logged policy's decision
        moved = logged != decision.route
        if moved:
            row.moved += 1
            self.flows[(logged or "-", decision.route)] += 1
        usage = usage_of(exchange.usage)
        tier = tier_of(decided.body.get("service_tier"))
        projected = None if usage is None or decided.model is None else self.prices.cost(decided.model, usage, tier)
        if usage is None or projected is None:
            row.unpriced += 1
            if usage is not None:
                self.unpriced_models[decided.model or "(unknown)"] += 1
            return
        if exchange.cache == "hit" and not moved:
            projected = _ZERO
        current = exchange.cost
        if current is None:
            current = (self.prices.cost(exchange.model, usage, tier) if exchange.model else None) or _ZERO
        baseline = exchange.baseline
        if baseline is None and self.prices.baseline_model is not None:
            baseline = self.prices.cost(self.prices.baseline_model, usage, tier)
        row.projected += projected
        row.current += current
        row.baseline += current if baseline is None else baseline
