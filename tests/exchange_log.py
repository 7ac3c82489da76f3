"""Logged exchanges for the export and replay tests, written through a real traffic store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from proxy.traffic.record import Exchange
from proxy.traffic.store import open_traffic_store

AT = 1_764_000_000.0
"""2025-11-24T16:00:00Z: the first exchange's time."""


def chat_request(question: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
        **fields,
    }


def chat_answer(text: str, model: str = "gpt-4") -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


def exchange(request_id: str, offset: float = 0.0, **fields: Any) -> Exchange:
    """A successful chat exchange on route gpt4 with its content; `fields` override any field."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "at": AT + offset,
        "endpoint": "chat.completions",
        "stream": False,
        "caller": "app",
        "team": None,
        "route": "gpt4",
        "rule": "default",
        "reason": "default",
        "model": "gpt-4",
        "fallbacks": (),
        "status": 200,
        "error": None,
        "cache": "miss",
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
        "cost": Decimal("0.0009"),
        "baseline": Decimal("0.0009"),
        "savings": Decimal(0),
        "latency_ms": 12.0,
        "ttfb_ms": 12.0,
        "request": chat_request(f"Question {request_id}?"),
        "answer": chat_answer(f"Answer {request_id}."),
    }
    values.update(fields)
    return Exchange(**values)


def write_log(url: str, exchanges: Sequence[Exchange]) -> None:
    """Write `exchanges` to the traffic store at `url` (a .jsonl path or a database URL), as the server would."""

    async def write() -> None:
        store = open_traffic_store(url)
        try:
            await store.write(exchanges)
        finally:
            await store.close()

    asyncio.run(write())
