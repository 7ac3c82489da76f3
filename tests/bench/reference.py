"""The bare pass-through the benchmark compares Turnout with: `python -m tests.bench.reference PORT UPSTREAM_PORT`.

A Litestar `@asgi` handler for each endpoint the benchmark measures: it reads the body, posts it upstream
on one pooled aiohttp session and writes the answer back (streams chunk by chunk): no validation, no
headers, no error mapping. What Turnout adds over this is the cost of its own features; what this costs
over the upstream is the floor that the framework, the client and this machine's loopback set.
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn
from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send

UPSTREAM = f"http://127.0.0.1:{sys.argv[2]}" if len(sys.argv) > 2 else ""
session: dict[str, aiohttp.ClientSession] = {}


async def open_session() -> None:
    session["upstream"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000, limit_per_host=1000))


async def close_session() -> None:
    await session["upstream"].close()


@asgi(["/v1/chat/completions", "/v1/responses", "/v1/embeddings"], is_mount=False, copy_scope=False)
async def forward(scope: Scope, receive: Receive, send: Send) -> None:
    """Forward the body and relay the answer as it comes."""
    body = b""
    while True:
        message: Any = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-reference"}
    async with session["upstream"].post(UPSTREAM + scope["path"], data=body, headers=headers) as response:
        content_type = response.headers.get("content-type", "application/json").encode()
        await send(
            {"type": "http.response.start", "status": response.status, "headers": [(b"content-type", content_type)]}
        )
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


app = Litestar(
    [forward], on_startup=[open_session], on_shutdown=[close_session], openapi_config=None, logging_config=None
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
