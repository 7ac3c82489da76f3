"""The `x-simulated-*` faults and latency for the simulator's non-chat endpoints (files, batches, jobs, moderations).

The same headers as chat, read the same way (`routes.simulator.limits`), so a test of Turnout's
pass-through can make any of these endpoints slow or failing: `x-simulated-latency-ms` waits before
answering, `x-simulated-fault` answers an OpenAI-format error (`<status>`, `text-<status>`) or never
answers (`timeout`); `x-simulated-fault-for` is matched against the request's `model` when it has one.
A file download also knows `disconnect` (the connection dropped after half the content) and `midstream`
(the same: a byte stream has no error event).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from routes.simulator.common import CONFIG, error_response, record_call
from routes.simulator.limits import fault_of, wait_ms

__all__ = ["RECORD", "simulated", "with_faults"]

RECORD = web.RequestKey[dict[str, Any]]("simulator_record")
"""Where `simulated` leaves the call's record in the request, for a handler that learns more later (an upload)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def simulated(request: web.Request, body: dict[str, Any], raw: bytes = b"") -> tuple[str, web.Response | None]:
    """Record the call, wait its latency and apply its fault: (the fault, the error to answer or None).

    Raises:
        SimulatorRejectedError: a simulation header is out of bounds.
    """
    fault = fault_of(request.headers, body.get("model"))
    latency = wait_ms(request.headers, "x-simulated-latency-ms", request.app[CONFIG].latency_ms)
    record = request[RECORD] = record_call(request, raw, body)
    record["outcome"] = "completed"
    try:
        if fault == "timeout":
            await asyncio.sleep(3600)
        if latency:
            await asyncio.sleep(latency / 1000)
    except asyncio.CancelledError:
        record["outcome"] = "cancelled"
        raise
    status = fault.removeprefix("text-")
    if status.isdigit():
        record["outcome"] = "fault"
        return fault, error_response(int(status), fault)
    return fault, None


def with_faults(handler: Handler) -> Handler:
    """`handler` (one without a body to read: a GET, a DELETE, a cancel) behind `simulated`."""

    @functools.wraps(handler)
    async def faulted(request: web.Request) -> web.StreamResponse:
        _, error = await simulated(request, {})
        return error or await handler(request)

    return faulted
