"""`run_sample`: `turnout replay --execute`: a deterministic sample of the replayed requests sent to candidate routes.

The sample is the `size` decided exchanges whose request ids hash lowest (SHA-256), so the same log gives
the same sample on every run, and a larger sample contains a smaller one. Each goes, as the client sent
it, to the candidate route's upstream (`{base_url}/chat/completions` or `/responses`, with the upstream's
key), with the route's `model`, without streaming and with `x-request-id: ID-replay`; the answer is
stored beside the logged one, one JSON object a line:

    {"request_id", "endpoint", "route", "rule", "model", "status", "latency_ms", "usage", "cost",
     "answer" | "error", "original": {"route", "rule", "model", "status", "usage", "cost", "answer"}}

A RAG route is not sent (its passages come from the server's retrieval): the line says so in `error`.
The session is the command's own, closed at the end.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from proxy.accounting.cost import PriceTable
from proxy.config.settings import Settings
from proxy.replay import Decided, usage_of
from proxy.wire.redisurl import redact_url

__all__ = ["Sample", "Sent", "choose_sample", "run_sample"]

_PATHS = {"chat.completions": "/chat/completions", "responses": "/responses"}


@dataclass(frozen=True, slots=True)
class Sent:
    """One sampled request as sent to its candidate route, and what came back (a JSON-ready row)."""

    row: dict[str, Any]


def _rank(item: Decided) -> int:
    return int.from_bytes(hashlib.sha256(item.exchange.request_id.encode()).digest(), "big")


class Sample:
    """The `size` decided exchanges whose request ids hash lowest, kept as they come (at most `size` in memory)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[tuple[int, int, Decided]] = []  # (-rank, arrival, item): the top is the highest rank kept
        self._seen = 0

    def offer(self, item: Decided) -> None:
        """Keep `item` if it is among the lowest `size` so far."""
        if self.size <= 0:
            return
        self._seen += 1
        entry = (-_rank(item), self._seen, item)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[Decided]:
        """The kept exchanges, lowest hash first."""
        return [item for _, _, item in sorted(self._heap, key=lambda entry: -entry[0])]


def choose_sample(decided: Iterable[Decided], size: int) -> list[Decided]:
    """The `size` exchanges whose request ids hash lowest, in that order."""
    sample = Sample(size)
    for item in decided:
        sample.offer(item)
    return sample.items()


def _original(item: Decided) -> dict[str, Any]:
    exchange = item.exchange
    return {
        "route": exchange.route,
        "rule": exchange.rule,
        "model": exchange.model,
        "status": exchange.status,
        "usage": exchange.usage,
        "cost": None if exchange.cost is None else str(exchange.cost),
        "answer": exchange.answer,
    }


async def _send(
    session: aiohttp.ClientSession, settings: Settings, prices: PriceTable, item: Decided, seconds: float
) -> dict[str, Any]:
    exchange, decision = item.exchange, item.decision
    row: dict[str, Any] = {
        "request_id": exchange.request_id,
        "endpoint": exchange.endpoint,
        "route": decision.route,
        "rule": decision.rule,
        "model": item.model,
    }
    entry = settings.deployment.routes.get(decision.route)
    upstream_name = getattr(entry, "upstream", None)
    if entry is None or entry.answers_with is not None or upstream_name not in settings.upstreams:
        return {**row, "status": None, "error": "not sent: the route answers through another (RAG)"}
    upstream = settings.upstreams[upstream_name]
    body = {k: v for k, v in item.body.items() if k not in ("stream", "stream_options")}
    if item.model is not None:
        body["model"] = item.model
    headers = {"x-request-id": f"{exchange.request_id}-replay"}
    if upstream.api_key:
        headers["authorization"] = f"Bearer {upstream.api_key.reveal()}"
    url = upstream.base_url.rstrip("/") + _PATHS[exchange.endpoint]
    started = time.perf_counter()
    try:
        async with session.post(
            url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            status = response.status
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        # the exception's text may quote the URL, credentials included: name the kind and the redacted URL only
        return {**row, "status": None, "error": f"{type(exc).__name__} calling {redact_url(url)}"}
    row["status"] = status
    row["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if status != 200 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else None
        return {**row, "error": error if error is not None else f"status {status}"}
    usage = answer.get("usage")
    parsed = usage_of(usage if isinstance(usage, dict) else None)
    model = answer.get("model") if isinstance(answer.get("model"), str) else item.model
    cost = None if parsed is None or model is None else prices.cost(model, parsed)
    return {**row, "usage": usage, "cost": None if cost is None else str(cost), "answer": answer}


async def run_sample(
    sample: Sequence[Decided], settings: Settings, prices: PriceTable, *, seconds: float = 120.0
) -> list[Sent]:
    """Send the sample (one request at a time: a replay must not load the upstream) and collect the rows."""
    sent: list[Sent] = []
    async with aiohttp.ClientSession() as session:
        for item in sample:
            row = await _send(session, settings, prices, item, seconds)
            row["original"] = _original(item)
            sent.append(Sent(row))
    return sent
