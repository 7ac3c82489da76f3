"""`PriceTable` (the shipped OpenAI prices, overridable by the policy file) and `cost_usd(model, usage) -> Decimal`.

Money is `Decimal` all the way to the header and the log; only the Prometheus counters turn it into a
float. A model is priced by its exact name, else by the longest table entry it starts with followed by
`-` or `:`: `gpt-4-0613` is priced as `gpt-4`, `ft:gpt-3.5-turbo-0613:acme::8Xyz` as `ft:gpt-3.5-turbo`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from proxy.config.sections import Price
from proxy.wire.schemas import Usage

__all__ = ["SHIPPED_PRICES", "Charge", "ModelPrice", "PriceTable", "cost_usd"]

_THOUSAND = Decimal(1000)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1,000 input and output tokens."""

    input: Decimal
    output: Decimal

    @classmethod
    def of(cls, input_per_1k: str | float, output_per_1k: str | float) -> ModelPrice:
        """From decimal strings or floats (a float goes through `str`, so `0.012` stays exactly 0.012)."""
        return cls(Decimal(str(input_per_1k)), Decimal(str(output_per_1k)))

    def cost(self, usage: Usage) -> Decimal:
        """What `usage` costs at this price."""
        return (self.input * usage.prompt_tokens + self.output * usage.completion_tokens) / _THOUSAND


_P = ModelPrice.of
# USD per 1K tokens (input, output), as OpenAI lists them. Dated snapshots priced unlike their family are
# listed by their own name; the rest are found by prefix. Embedding models bill input tokens only.
SHIPPED_PRICES: Mapping[str, ModelPrice] = {
    # current
    "gpt-4.1": _P("0.002", "0.008"),
    "gpt-4.1-mini": _P("0.0004", "0.0016"),
    "gpt-4.1-nano": _P("0.0001", "0.0004"),
    "gpt-4o": _P("0.0025", "0.01"),
    "gpt-4o-2024-05-13": _P("0.005", "0.015"),
    "gpt-4o-mini": _P("0.00015", "0.0006"),
    "o1": _P("0.015", "0.06"),
    "o1-mini": _P("0.0011", "0.0044"),
    "o3": _P("0.002", "0.008"),
    "o3-mini": _P("0.0011", "0.0044"),
    "o4-mini": _P("0.0011", "0.0044"),
    # legacy
    "gpt-4": _P("0.03", "0.06"),
    "gpt-4-32k": _P("0.06", "0.12"),
    "gpt-4-turbo": _P("0.01", "0.03"),
    "gpt-4-turbo-preview": _P("0.01", "0.03"),
    "gpt-4-1106-preview": _P("0.01", "0.03"),
    "gpt-4-0125-preview": _P("0.01", "0.03"),
    "gpt-4-vision-preview": _P("0.01", "0.03"),
    "gpt-3.5-turbo": _P("0.0005", "0.0015"),
    "gpt-3.5-turbo-1106": _P("0.001", "0.002"),
    "gpt-3.5-turbo-0613": _P("0.0015", "0.002"),
    "gpt-3.5-turbo-0301": _P("0.0015", "0.002"),
    "gpt-3.5-turbo-16k": _P("0.003", "0.004"),
    "gpt-3.5-turbo-instruct": _P("0.0015", "0.002"),
    # fine-tuned: billed at the fine-tuned model's own rates
    "ft:gpt-3.5-turbo": _P("0.012", "0.016"),
    "ft:gpt-4o-mini": _P("0.0003", "0.0012"),
    "ft:gpt-4o": _P("0.00375", "0.015"),
    "ft:gpt-4.1": _P("0.003", "0.012"),
    "ft:gpt-4.1-mini": _P("0.0008", "0.0032"),
    "ft:gpt-4.1-nano": _P("0.0002", "0.0008"),
    # embeddings (the RAG path, semantic conditions); the embedded local model costs nothing
    "text-embedding-3-small": _P("0.00002", "0"),
    "text-embedding-3-large": _P("0.00013", "0"),
    "text-embedding-ada-002": _P("0.0001", "0"),
    "wordllama": _P("0", "0"),
}


@dataclass(frozen=True, slots=True)
class Charge:
    """What one answer cost and what the same tokens would have cost on the baseline route (USD)."""

    cost: Decimal
    baseline: Decimal

    @property
    def savings(self) -> Decimal:
        """Baseline minus actual (negative when the answering route is dearer than the baseline)."""
        return self.baseline - self.cost


class PriceTable:
    """Prices by model name: the shipped table with the policy file's `prices` over it, and the baseline."""

    __slots__ = ("_found", "_known", "_prices", "baseline_model")

    def __init__(
        self,
        overrides: Mapping[str, Price] | None = None,
        *,
        baseline_model: str | None = None,
        known_models: Iterable[str] = (),
        shipped: Mapping[str, ModelPrice] = SHIPPED_PRICES,
    ) -> None:
        self._prices = dict(shipped)
        for model, price in (overrides or {}).items():
            self._prices[model] = ModelPrice.of(price.input, price.output)
        self.baseline_model = baseline_model
        """The model of the policy file's `baseline` route; None: every answer is its own baseline."""
        self._known = frozenset(known_models)
        self._found: dict[str, str | None] = {}

    def entry(self, model: str) -> str | None:
        """The table entry `model` is priced by (exact name, else longest `entry-`/`entry:` prefix), or None."""
        try:
            return self._found[model]
        except KeyError:
            pass
        found: str | None = model if model in self._prices else None
        if found is None:
            candidates = [name for name in self._prices if model.startswith((f"{name}-", f"{name}:"))]
            found = max(candidates, key=len, default=None)
        if len(self._found) < 4096:  # model names come from upstreams: bounded memo
            self._found[model] = found
        return found

    def label(self, model: str) -> str:
        """`model` as a metric label: itself when a route names it, else its table entry, else `other`."""
        if model in self._known:
            return model
        return self.entry(model) or "other"

    def price(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None when the table has none for it."""
        entry = self.entry(model)
        return None if entry is None else self._prices[entry]

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """What `usage` on `model` cost, or None when `model` has no price."""
        price = self.price(model)
        return None if price is None else price.cost(usage)

    def charge(self, model: str, usage: Usage, *, cached: bool = False, compared: bool = True) -> Charge | None:
        """The cost of an answer by `model` and the baseline's cost for the same tokens; None if unpriced.

        A cached answer costs nothing and saves its whole baseline cost. Not `compared` (the baseline route
        serves no such request: an embedding), an answer is its own baseline.
        """
        cost = self.cost(model, usage)
        if cost is None:
            return None
        baseline = self.cost(self.baseline_model, usage) if compared and self.baseline_model is not None else None
        return Charge(cost=ZERO if cached else cost, baseline=cost if baseline is None else baseline)


def cost_usd(model: str, usage: Usage, prices: PriceTable | None = None) -> Decimal:
    """What `usage` on `model` cost in USD by `prices` (default: the shipped table).

    Raises:
        KeyError: the table has no price for `model`.
    """
    cost = (prices or PriceTable()).cost(model, usage)
    if cost is None:
        raise KeyError(f"no price for the model '{model}'")
    return cost
