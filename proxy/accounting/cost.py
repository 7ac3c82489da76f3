"""`PriceTable` (the shipped OpenAI prices, overridable by the policy file) and `cost_usd(model, usage) -> Decimal`.

Money is `Decimal` all the way to the header and the log; only the Prometheus counters turn it into a
float. A model is priced by its exact name, else by the longest table entry it starts with followed by
`-` or `:`: `gpt-4.1-2025-04-14` is priced as `gpt-4.1`, `ft:gpt-4.1-mini-2025-04-14:acme::8Xyz` as `ft:gpt-4.1-mini`.

What one usage costs, at the rates of its service tier (`standard`, `flex`, `priority`, `batch`):

    text_in  = prompt_tokens - cached_tokens - audio_in        (audio_in: prompt_tokens_details.audio_tokens)
    text_out = completion_tokens - audio_out                   (reasoning tokens are in completion_tokens)
    cost = (text_in * input + cached_tokens * cached_input + audio_in * audio_input
            + text_out * output + audio_out * audio_output) / 1000

with each rate in USD per 1,000 tokens; a missing `cached_input` / `audio_*` rate is the plain input /
output rate. The Batch API's rates are half the standard ones unless the table (or the policy) says
otherwise; a tier a model is not offered at is billed at its standard rates.

The baseline (`PriceTable.charge`) is the counterfactual: what the client's own request would have cost
on the baseline route's model; `savings = baseline - cost`, negative when the route is dearer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from proxy.accounting.prices import PRICES_VERSION, SHIPPED, TOKENIZERS, Listed
from proxy.config.sections import Price, TierPrice
from proxy.wire.schemas import Usage

__all__ = [
    "SHIPPED_PRICES",
    "SHIPPED_RATES",
    "Charge",
    "ModelPrice",
    "PriceTable",
    "Rates",
    "Tier",
    "cost_usd",
    "tier_of",
    "tokenizer_of",
]

_THOUSAND = Decimal(1000)
_HALF = Decimal("0.5")
ZERO = Decimal(0)

Tier = str
"""`standard`, `flex`, `priority` or `batch` (any other value is billed as `standard`)."""


def tier_of(service_tier: object) -> Tier:
    """The tier a request's `service_tier` is billed at: `flex` and `priority` as asked, anything else standard."""
    return service_tier if isinstance(service_tier, str) and service_tier in ("flex", "priority") else "standard"


def _d(value: str | float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1,000 tokens: input, output, and the rates of cached input and audio (None: the plain rate)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    audio_input: Decimal | None = None
    audio_output: Decimal | None = None

    @classmethod
    def of(
        cls,
        input_per_1k: str | float,
        output_per_1k: str | float,
        cached_input: str | float | None = None,
        audio_input: str | float | None = None,
        audio_output: str | float | None = None,
    ) -> ModelPrice:
        """From decimal strings or floats (a float goes through `str`, so `0.012` stays exactly 0.012)."""
        return cls(
            Decimal(str(input_per_1k)),
            Decimal(str(output_per_1k)),
            _d(cached_input),
            _d(audio_input),
            _d(audio_output),
        )

    def cost(self, usage: Usage) -> Decimal:
        """What `usage` costs at this price (see the module docstring's formula)."""
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        total = self.input * prompt + self.output * completion
        if usage.prompt_tokens_details is None and usage.completion_tokens_details is None:
            return total / _THOUSAND
        cached = usage.cached_tokens
        if cached and self.cached_input is not None:
            total += (self.cached_input - self.input) * cached
        given, made = usage.prompt_tokens_details, usage.completion_tokens_details
        audio_in = min(given.audio_tokens, prompt - cached) if given is not None else 0
        if audio_in and self.audio_input is not None:
            total += (self.audio_input - self.input) * audio_in
        audio_out = min(made.audio_tokens, completion) if made is not None else 0
        if audio_out and self.audio_output is not None:
            total += (self.audio_output - self.output) * audio_out
        return total / _THOUSAND

    def scaled(self, factor: Decimal) -> ModelPrice:
        """Every rate times `factor` (the Batch API's half)."""

        def times(rate: Decimal | None) -> Decimal | None:
            return None if rate is None else rate * factor

        return ModelPrice(
            self.input * factor,
            self.output * factor,
            times(self.cached_input),
            times(self.audio_input),
            times(self.audio_output),
        )


@dataclass(frozen=True, slots=True)
class Rates:
    """A model's prices by service tier; a tier it is not offered at is its standard price."""

    standard: ModelPrice
    flex: ModelPrice | None = None
    priority: ModelPrice | None = None
    batch: ModelPrice | None = None
    """None: half the standard rates."""

    def at(self, tier: Tier) -> ModelPrice:
        """The price at `tier`."""
        if tier == "standard":
            return self.standard
        if tier == "batch":
            return self.batch or self.standard.scaled(_HALF)
        found = self.flex if tier == "flex" else self.priority if tier == "priority" else None
        return found or self.standard


def _per_1k(per_1m: str | None) -> Decimal | None:
    return None if per_1m is None else Decimal(per_1m) / _THOUSAND


def _rates_of(listed: Listed) -> Rates:
    def tier(rates: tuple[str, str | None, str] | None) -> ModelPrice | None:
        if rates is None:
            return None
        given, cached, made = rates
        return ModelPrice(Decimal(given) / _THOUSAND, Decimal(made) / _THOUSAND, _per_1k(cached))

    standard = ModelPrice(
        Decimal(listed.input) / _THOUSAND,
        Decimal(listed.output) / _THOUSAND,
        _per_1k(listed.cached_input),
        _per_1k(listed.audio_input),
        _per_1k(listed.audio_output),
    )
    flex = tier(listed.flex)  # OpenAI's flex rates are its batch rates, rounded as listed
    return Rates(standard, flex=flex, priority=tier(listed.priority), batch=flex)


def _rates_from_policy(price: Price) -> Rates:
    def tier(given: TierPrice | None) -> ModelPrice | None:
        return None if given is None else ModelPrice.of(given.input, given.output, given.cached_input)

    standard = ModelPrice.of(price.input, price.output, price.cached_input, price.audio_input, price.audio_output)
    return Rates(standard, flex=tier(price.flex), priority=tier(price.priority), batch=tier(price.batch))


SHIPPED_RATES: Mapping[str, Rates] = {model: _rates_of(listed) for model, listed in SHIPPED.items()}
"""The shipped table (`proxy.accounting.prices`), in USD per 1,000 tokens."""
SHIPPED_PRICES: Mapping[str, ModelPrice] = {model: rates.standard for model, rates in SHIPPED_RATES.items()}
"""The shipped standard prices."""


@functools.lru_cache(maxsize=4096)  # model names come from upstreams: bounded
def tokenizer_of(model: str) -> str | None:
    """The tokenizer OpenAI counts `model`'s prompts with (`cl100k_base`, `o200k_base`), or None when unknown."""
    base = model[3:] if model.startswith("ft:") else model
    return next((name for prefix, name in TOKENIZERS if base.startswith(prefix)), None)


@dataclass(frozen=True, slots=True)
class Charge:
    """What one answer cost, what the client's own request would have cost on the baseline route (USD)."""

    cost: Decimal
    baseline: Decimal
    estimated: bool = False
    """The usage was estimated (a stream that ended before its upstream reported it), not reported."""

    @property
    def savings(self) -> Decimal:
        """Baseline minus actual (negative when the answering route is dearer than the baseline)."""
        return self.baseline - self.cost


class PriceTable:
    """Prices by model name: the shipped table with the policy file's `prices` over it, and the baseline."""

    __slots__ = ("_found", "_known", "_prices", "baseline_model", "overridden")

    def __init__(
        self,
        overrides: Mapping[str, Price] | None = None,
        *,
        baseline_model: str | None = None,
        known_models: Iterable[str] = (),
        shipped: Mapping[str, Rates] = SHIPPED_RATES,
    ) -> None:
        self._prices = dict(shipped)
        for model, price in (overrides or {}).items():
            self._prices[model] = _rates_from_policy(price)
        self.overridden = frozenset(overrides or ())
        """The models the policy file prices itself."""
        self.baseline_model = baseline_model
        """The model of the policy file's `baseline` route; None: every answer is its own baseline."""
        self._known = frozenset(known_models)
        self._found: dict[str, str | None] = {}

    @property
    def version(self) -> str:
        """Which price data is in force: the shipped table's date, `+policy` when the policy overrides some."""
        return f"{PRICES_VERSION}+policy" if self.overridden else PRICES_VERSION

    def models(self) -> list[str]:
        """Every table entry, sorted."""
        return sorted(self._prices)

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

    def rates(self, model: str) -> Rates | None:
        """The prices of `model` by tier, or None when the table has none for it."""
        entry = self.entry(model)
        return None if entry is None else self._prices[entry]

    def price(self, model: str, tier: Tier = "standard") -> ModelPrice | None:
        """The price of `model` at `tier`, or None when the table has none for it."""
        rates = self.rates(model)
        return None if rates is None else rates.at(tier)

    def cost(self, model: str, usage: Usage, tier: Tier = "standard") -> Decimal | None:
        """What `usage` on `model` cost at `tier`, or None when `model` has no price."""
        price = self.price(model, tier)
        return None if price is None else price.cost(usage)

    def charge(
        self,
        model: str,
        usage: Usage,
        *,
        cached: bool = False,
        compared: bool = True,
        baseline_usage: Usage | None = None,
        tier: Tier = "standard",
        estimated: bool = False,
    ) -> Charge | None:
        """The cost of an answer by `model` and the baseline's; None if `model` is unpriced.

        The baseline prices `baseline_usage` (the client's own prompt, counted for the baseline model, and the
        answer's completion tokens: `proxy.pipeline`), or `usage` itself when not given, on the baseline model at
        the same tier. A cached answer costs nothing and saves its whole baseline. Not `compared` (the baseline
        route serves no such request: an embedding) or with no baseline model, an answer is its own baseline.
        """
        cost = self.cost(model, usage, tier)
        if cost is None:
            return None
        baseline = None
        if compared and self.baseline_model is not None:
            baseline = self.cost(self.baseline_model, baseline_usage or usage, tier)
        return Charge(
            cost=ZERO if cached else cost, baseline=cost if baseline is None else baseline, estimated=estimated
        )


def cost_usd(model: str, usage: Usage, prices: PriceTable | None = None, tier: Tier = "standard") -> Decimal:
    """What `usage` on `model` cost in USD by `prices` (default: the shipped table) at `tier`.

    Raises:
        KeyError: the table has no price for `model`.
    """
    cost = (prices or PriceTable()).cost(model, usage, tier)
    if cost is None:
        raise KeyError(f"no price for the model '{model}'")
    return cost
