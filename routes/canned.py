"""A fixed text as the answer of a chat completion or a Responses request, whole or streamed; no model called.

What a RAG route answers when retrieval finds nothing above its floor and its `no_context` says so
(`routes.rag`). Each form is the one an upstream would send, so strict OpenAI clients read it: a
`chat.completion`, or its chunks (role, the text, the finish reason, a usage chunk, `[DONE]`); a
completed `Response`, or its typed events (`response.created` … `response.completed`, numbered from
0). The usage is zero tokens, reported, so nothing is estimated or billed for it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec

from proxy.wire.sse import DONE_EVENT, encode_event

__all__ = ["answer", "events"]

_ZERO_CHAT = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
_ZERO_RESPONSES = {
    "input_tokens": 0,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 0,
}


def _chat(text: str, model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The completion, and the chunks of its stream."""
    envelope = {"id": f"chatcmpl-turnout-{secrets.token_hex(12)}", "created": int(time.time()), "model": model}
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    whole = {**envelope, "object": "chat.completion", "choices": [choice], "usage": _ZERO_CHAT}
    chunk = {**envelope, "object": "chat.completion.chunk"}
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None),
        ({"content": text}, None),
        ({}, "stop"),
    ]
    chunks = [
        {**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        for delta, finish in deltas
    ]
    chunks.append({**chunk, "choices": [], "usage": _ZERO_CHAT})
    return whole, chunks


def _response(text: str, model: str, instructions: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The completed `Response`, and the typed events of its stream (`sequence_number` added when framed)."""
    now = int(time.time())
    item_id = f"msg_turnout{secrets.token_hex(12)}"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    opened: dict[str, Any] = {
        "id": f"resp_turnout{secrets.token_hex(12)}",
        "object": "response",
        "created_at": now,
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": instructions,
        "metadata": {},
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "store": False,  # kept nowhere: no later request can continue it
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
    }
    whole = {**opened, "status": "completed", "completed_at": now, "output": [item], "usage": _ZERO_RESPONSES}
    ids = {"item_id": item_id, "output_index": 0}
    text_ids = {**ids, "content_index": 0}
    typed: list[dict[str, Any]] = [
        {"type": "response.created", "response": opened},
        {"type": "response.in_progress", "response": opened},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **text_ids, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **text_ids, "delta": text, "logprobs": []},
        {"type": "response.output_text.done", **text_ids, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **text_ids, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": whole},
    ]
    return whole, typed


def answer(kind: str, text: str, model: str, extra: dict[str, Any], instructions: Any = None) -> bytes:
    """`text` as the whole answer of an endpoint `kind` (`chat` or `responses`), with the members `extra` added."""
    whole = _response(text, model, instructions)[0] if kind == "responses" else _chat(text, model)[0]
    return msgspec.json.encode({**whole, **extra})


def events(kind: str, text: str, model: str, extra: dict[str, Any], instructions: Any = None) -> bytes:
    """`text` as the stream of an endpoint `kind`, its end event last; `extra` added to the first event."""
    if kind == "responses":
        typed = _response(text, model, instructions)[1]
        typed[0] = {**typed[0], **extra}
        framed = (
            b"event: " + event["type"].encode() + b"\ndata: " + msgspec.json.encode({**event, "sequence_number": n})
            for n, event in enumerate(typed)
        )
        return b"".join(part + b"\n\n" for part in framed)
    chunks = _chat(text, model)[1]
    chunks[0] = {**chunks[0], **extra}
    return b"".join(encode_event(msgspec.json.encode(chunk)) for chunk in chunks) + DONE_EVENT
