"""`Billing`: what each answer of the pipeline is charged, and what the request would have cost on the baseline.

The price table (`proxy.accounting.cost`) prices usage; this part knows the request: the service tier it
asked for, which route answered it, whether that route sent the client's own prompt, and what to do when
a stream ends before its upstream reported usage. The baseline is the counterfactual (README, "Cost"):

    baseline = price(baseline model, client's prompt tokens, answer's completion tokens, same tier)
    savings  = baseline - cost          (cost: the answer's, plus the embeddings spent for the request)

The client's prompt tokens are the upstream's own count when the request went to the baseline route, or
when the answering route sent the prompt as the client sent it to a model with the baseline's tokenizer
(the count is the same); otherwise (the RAG route's prompt carries its passages; a model of another
tokenizer counts otherwise) the prompt as the client sent it, estimated for the baseline
(`policies.features`, fitted to cl100k_base: median error 1.9%).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from proxy.accounting.cost import PriceTable, Tier, tier_of, tokenizer_of
from proxy.accounting.tally import Tally
from proxy.endpoints.base import Codec
from proxy.wire.schemas import Usage
from routes import Call, RagRoute, Route

__all__ = ["Billing"]


class Billing:
    """Charges a request's tally for the usage a route reported (or, for a cut stream, an estimate)."""

    __slots__ = ("_augmenting", "_baseline", "_compared", "_routes")

    def __init__(self, routes: Mapping[str, Route], *, baseline: str | None, compared: frozenset[str]) -> None:
        self._routes = routes
        self._baseline = baseline
        """The baseline route's name (its own answers are their own baseline)."""
        self._compared = compared
        """The endpoint kinds priced against the baseline: those its route serves."""
        self._augmenting = frozenset(name for name, route in routes.items() if isinstance(route, RagRoute))
        """Routes whose upstream prompt is not the client's (the RAG route adds passages)."""

    def account(
        self,
        prices: PriceTable,
        codec: Codec[Any],
        call: Call[Any],
        tally: Tally,
        route: str,
        model: str | None,
        usage: Usage,
        *,
        cached: bool = False,
        estimated: bool = False,
    ) -> None:
        """Price `usage` on `route`: by the model that answered, else the route's, else the caller's."""
        answered_by = model or self._routes[route].model or codec.requested_model(call.body)
        compared = codec.kind in self._compared
        tally.charge_for(
            prices,
            answered_by,
            usage,
            cached=cached,
            compared=compared,
            baseline_usage=self.baseline_usage(prices, codec, call, route, answered_by, usage) if compared else None,
            tier=tier(call),
            estimated=estimated,
        )

    def baseline_usage(
        self, prices: PriceTable, codec: Codec[Any], call: Call[Any], route: str, model: str, usage: Usage
    ) -> Usage | None:
        """The client's own request as the baseline model would be billed for it (None: `usage` itself)."""
        baseline = prices.baseline_model
        if baseline is None or route == self._baseline:
            return None
        if route not in self._augmenting and (model == baseline or _same_tokenizer(model, baseline)):
            return None
        prompt = codec.features(call).prompt_tokens
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=usage.completion_tokens,
            total_tokens=prompt + usage.completion_tokens,
            completion_tokens_details=usage.completion_tokens_details,
        )

    def estimate(
        self, prices: PriceTable, codec: Codec[Any], call: Call[Any], tally: Tally, route: str, sent: int
    ) -> None:
        """Charge a stream that ended before its usage came: the client's prompt as estimated, a token an event.

        Chat and Responses streams carry about one token per content event (the few framing events count as
        tokens too); the charge is marked `estimated`. A RAG route's passages are not in the estimate: it errs
        low there.
        """
        prompt = codec.features(call).prompt_tokens
        usage = Usage(prompt_tokens=prompt, completion_tokens=sent, total_tokens=prompt + sent)
        self.account(prices, codec, call, tally, route, None, usage, estimated=True)


def _same_tokenizer(model: str, baseline: str) -> bool:
    found = tokenizer_of(model)
    return found is not None and found == tokenizer_of(baseline)


def tier(call: Call[Any]) -> Tier:
    """The service tier the request asked for (`service_tier`), as it is billed (`flex`, `priority`, else standard)."""
    raw = call.body.fields.get("service_tier")
    if raw is None:
        return "standard"
    try:
        return tier_of(msgspec.json.decode(raw))
    except msgspec.DecodeError:
        return "standard"
