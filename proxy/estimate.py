"""`AnswerSizes`: what an answer may cost before it exists, for the budget reservation of a request.

A budget admits a request while `spent + reserved < budget` (`proxy.auth.limits`), and reserves what the
request may cost until it has ended; the closer the reservation is to the real cost, the less concurrent
requests can spend past a budget. The estimate is the request's prompt (the policy's own token estimate)
plus as many completion tokens as the route's recent answers of that endpoint kind had (an exponentially
weighted mean), priced by the model the route asks for. Before a route's first answer, `FIRST_GUESS`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from policies import Decision
from proxy.accounting.cost import PriceTable
from proxy.endpoints.base import Codec
from proxy.wire.schemas import Usage
from routes import Call, Route

__all__ = ["FIRST_GUESS", "AnswerSizes"]

FIRST_GUESS = 256
"""Completion tokens assumed for a route that has not answered yet (embeddings: none)."""
_WEIGHT = 0.2
"""Each new answer's weight in the mean: about the last ten answers count."""
_NO_COMPLETION = frozenset({"embeddings"})


class AnswerSizes:
    """Completion tokens per (route, endpoint kind), as a moving mean of their answers."""

    __slots__ = ("_mean",)

    def __init__(self) -> None:
        self._mean: dict[tuple[str, str], float] = {}

    def observe(self, route: str, kind: str, completion_tokens: int) -> None:
        """A `kind` answer on `route` had `completion_tokens`."""
        key = (route, kind)
        mean = self._mean.get(key)
        self._mean[key] = completion_tokens if mean is None else mean + _WEIGHT * (completion_tokens - mean)

    def reservation(
        self, prices: PriceTable, codec: Codec[Any], call: Call[Any], decision: Decision, route: Route
    ) -> Decimal:
        """What `call`'s answer on the decided `route` may cost, in USD (0 when its model has no price)."""
        kind = codec.kind
        guess = 0 if kind in _NO_COMPLETION else FIRST_GUESS
        completion = round(self._mean.get((decision.route, kind), guess))
        prompt = codec.features(call).prompt_tokens
        model = route.model or codec.requested_model(call.body)
        cost = prices.cost(model, Usage(prompt_tokens=prompt, completion_tokens=completion))
        return cost if cost is not None else Decimal(0)
