"""The shipped price data: OpenAI's published prices per model, by service tier, dated (`PRICES_VERSION`).

Written in OpenAI's own unit, USD per 1M tokens, as its pricing page lists them (standard input, cached
input, output; the audio models' audio input and output), so that a line can be checked against the page
at a glance; `proxy.accounting.cost` turns them into USD per 1,000 tokens, the policy file's unit.

- Batch API: half the standard rates of every model, cached input included (OpenAI's "50% off"); the
  models with flex rates list their batch rates as those (rounded: o4-mini's cached 0.138, not 0.1375).
- Flex (`service_tier: flex`): only the models OpenAI offers it for (o3, o4-mini, the gpt-5 family),
  at their batch rates; any other model is billed at its standard rates (OpenAI refuses flex for it).
- Priority (`service_tier: priority`): the models OpenAI lists a priority price for; the rest, standard.
- A model without a cached-input rate bills cached tokens (it reports none) at its input rate.
- Fine-tuned models (`ft:BASE:org::id`) have their own rates, listed as `ft:BASE`.

Why not a price library at run time: `genai-prices` 0.2.3 (2026-11) was measured against these prices
(`python -m tests.bench.price_library`): it agrees on every standard, cached, flex and priority rate it
has, but ignores the Batch discount, prices audio tokens as text tokens, has no `ft:gpt-4.1*`,
`ft:davinci-002` or `ft:babbage-002`, and costs 36-132 µs a lookup (with pydantic and an HTTP client
as dependencies), against well under 2 µs here. Its data is the cross-check when this table is updated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PRICES_SOURCE", "PRICES_VERSION", "SHIPPED", "TOKENIZERS", "Listed"]

PRICES_VERSION = "2026-12-03"
"""When the table was last checked against OpenAI's pricing page (the `turnout_price_data_info` metric's label)."""
PRICES_SOURCE = "OpenAI's pricing page, checked against genai-prices 0.2.3"


@dataclass(frozen=True, slots=True)
class Listed:
    """One model's prices as OpenAI lists them: USD per 1M tokens, decimal strings (None: not listed)."""

    input: str
    output: str
    cached_input: str | None = None
    audio_input: str | None = None
    audio_output: str | None = None
    flex: tuple[str, str | None, str] | None = None
    """(input, cached input, output) with `service_tier: flex`; None: not offered."""
    priority: tuple[str, str | None, str] | None = None
    """(input, cached input, output) with `service_tier: priority`; None: not offered."""


_L = Listed
SHIPPED: Mapping[str, Listed] = {
    # gpt-5 family
    "gpt-5": _L("1.25", "10.00", "0.125", flex=("0.625", "0.0625", "5.00"), priority=("2.50", "0.25", "20.00")),
    "gpt-5-mini": _L("0.25", "2.00", "0.025", flex=("0.125", "0.0125", "1.00"), priority=("0.45", "0.045", "3.60")),
    "gpt-5-nano": _L("0.05", "0.40", "0.005", flex=("0.025", "0.0025", "0.20")),
    # gpt-4.1, gpt-4o
    "gpt-4.1": _L("2.00", "8.00", "0.50", priority=("3.50", "0.875", "14.00")),
    "gpt-4.1-mini": _L("0.40", "1.60", "0.10", priority=("0.70", "0.175", "2.80")),
    "gpt-4.1-nano": _L("0.10", "0.40", "0.025", priority=("0.20", "0.05", "0.80")),
    "gpt-4o": _L("2.50", "10.00", "1.25", priority=("4.25", "2.125", "17.00")),
    "gpt-4o-2024-05-13": _L("5.00", "15.00", priority=("8.75", None, "26.25")),
    "gpt-4o-mini": _L("0.15", "0.60", "0.075", priority=("0.25", "0.125", "1.00")),
    # audio: text tokens at the first two rates, audio tokens at their own
    "gpt-4o-audio-preview": _L("2.50", "10.00", audio_input="40.00", audio_output="80.00"),
    "gpt-4o-audio-preview-2024-10-01": _L("2.50", "10.00", audio_input="100.00", audio_output="200.00"),
    "gpt-4o-mini-audio-preview": _L("0.15", "0.60", audio_input="10.00", audio_output="20.00"),
    # reasoning models: reasoning tokens are output tokens (already in `completion_tokens`)
    "o1": _L("15.00", "60.00", "7.50"),
    "o1-mini": _L("1.10", "4.40", "0.55"),
    "o3": _L("2.00", "8.00", "0.50", flex=("1.00", "0.25", "4.00"), priority=("3.50", "0.875", "14.00")),
    "o3-mini": _L("1.10", "4.40", "0.55"),
    "o4-mini": _L("1.10", "4.40", "0.275", flex=("0.55", "0.138", "2.20"), priority=("2.00", "0.50", "8.00")),
    # legacy
    "gpt-4": _L("30.00", "60.00"),
    "gpt-4-32k": _L("60.00", "120.00"),
    "gpt-4-turbo": _L("10.00", "30.00"),
    "gpt-4-turbo-preview": _L("10.00", "30.00"),
    "gpt-4-1106-preview": _L("10.00", "30.00"),
    "gpt-4-0125-preview": _L("10.00", "30.00"),
    "gpt-4-vision-preview": _L("10.00", "30.00"),
    "gpt-3.5-turbo": _L("0.50", "1.50"),
    "gpt-3.5-turbo-1106": _L("1.00", "2.00"),
    "gpt-3.5-turbo-0613": _L("1.50", "2.00"),
    "gpt-3.5-turbo-0301": _L("1.50", "2.00"),
    "gpt-3.5-turbo-16k": _L("3.00", "4.00"),
    "gpt-3.5-turbo-instruct": _L("1.50", "2.00"),
    "davinci-002": _L("2.00", "2.00"),
    "babbage-002": _L("0.40", "0.40"),
    # fine-tuned: billed at the fine-tuned rates of their base (`ft:gpt-3.5-turbo`: the rate DESIGN.md's case
    # rests on, 0.012 / 0.016 per 1K; genai-prices lists 3.00 / 6.00 per 1M, OpenAI's later rate)
    "ft:gpt-3.5-turbo": _L("12.00", "16.00"),
    "ft:gpt-4o-mini": _L("0.30", "1.20", "0.15"),
    "ft:gpt-4o": _L("3.75", "15.00", "1.875"),
    "ft:gpt-4.1": _L("3.00", "12.00", "0.75"),
    "ft:gpt-4.1-mini": _L("0.80", "3.20", "0.20"),
    "ft:gpt-4.1-nano": _L("0.20", "0.80", "0.05"),
    "ft:davinci-002": _L("12.00", "12.00"),
    "ft:babbage-002": _L("1.60", "1.60"),
    # embeddings (input tokens only); the embedded local model costs nothing
    "text-embedding-3-small": _L("0.02", "0"),
    "text-embedding-3-large": _L("0.13", "0"),
    "text-embedding-ada-002": _L("0.10", "0"),
    "wordllama": _L("0", "0"),
}

TOKENIZERS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
)
"""Model name prefix → the tokenizer its prompt is counted with, first match wins (an `ft:` prefix is dropped)."""
