"""Turnout's price table against `genai-prices` (the maintained library evaluated for issue 15): cases and speed.

`python -m tests.bench.price_library` prices the usage corpus (tests/corpus/usage.yaml: cached, reasoning,
audio, flex, priority, batch, fine-tuned) with both, prints every entry where `genai-prices` differs from the
hand-computed cost, and times a lookup-and-price in each. `genai-prices` is not a dependency of Turnout: install
it beside the project for this run only (`uv pip install genai-prices`). It never fetches prices here: only its
`UpdatePrices` does, which this never starts (and a socket guard makes any connection fail loudly).
"""

from __future__ import annotations

import importlib
import socket
import sys
import timeit
import warnings
from typing import Any

from proxy.accounting.cost import PriceTable
from tests.corpus import CORPUS, Entry


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("genai-prices tried to reach the network")


def _library_price(genai_prices: Any, entry: Entry) -> Any:
    usage = entry.as_usage()
    given, made = usage.prompt_tokens_details, usage.completion_tokens_details
    counts = {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_tokens": usage.cached_tokens,
        "input_audio_tokens": given.audio_tokens if given is not None else 0,
        "output_audio_tokens": made.audio_tokens if made is not None else 0,
    }
    context = {"service_tier": entry.tier} if entry.tier != "standard" else None
    try:
        found = genai_prices.calc_price(
            genai_prices.Usage(**counts), entry.model, provider_id="openai", price_context=context
        )
    except LookupError as exc:
        return f"no price ({exc})"
    return found.total_price


def main() -> int:
    """Print the disagreements and the timings."""
    socket.socket.connect = _no_network  # type: ignore[method-assign]
    try:
        genai_prices: Any = importlib.import_module("genai_prices")  # optional: for this comparison only
    except ImportError:
        print("genai-prices is not installed: `uv pip install genai-prices` for this run")
        return 1
    warnings.simplefilter("ignore")
    print(f"genai-prices {genai_prices.__version__} against {len(CORPUS)} hand-computed costs")
    table, wrong = PriceTable(), 0
    for entry in CORPUS:
        theirs = _library_price(genai_prices, entry)
        ours = table.cost(entry.model, entry.as_usage(), entry.tier)
        assert ours == entry.cost, entry.id
        if theirs != entry.cost:
            wrong += 1
            print(f"  {entry.id:40} hand {entry.cost}  genai-prices {theirs}")
    print(f"genai-prices differs on {wrong} of {len(CORPUS)}; Turnout's table on 0")
    sample = next(entry for entry in CORPUS if entry.id == "chat-gpt-4o-cached")
    usage, number = sample.as_usage(), 5000
    ours_us = timeit.timeit(lambda: table.cost(sample.model, usage), number=number) / number * 1e6
    theirs_us = timeit.timeit(lambda: _library_price(genai_prices, sample), number=number) / number * 1e6
    print(f"lookup + price of {sample.model}: Turnout {ours_us:.2f} µs, genai-prices {theirs_us:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
