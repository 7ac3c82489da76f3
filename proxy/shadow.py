"""`run_shadow`: a copy of a request, sent in the background to another route; a shadow's answer is dropped.

The parity pairs (`proxy.pairing`) send their background copies through it too, and keep the answer it returns.

What it costs is real spend: its tokens and cost go to the recorder (on its route, with no baseline of its
own) and, when the caller's team pays for evaluation (`auth.shadow_spend`), to that team's budget.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import Tally
from proxy.endpoints.base import Codec
from proxy.wire.errors import ProxyError
from proxy.wire.schemas import Usage
from routes import Call, Route

__all__ = ["ShadowSpent", "run_shadow"]

logger = logging.getLogger("turnout.pipeline")

ShadowSpent = Callable[[str | None, Decimal], Awaitable[None]]
"""Given a shadow copy's team and cost, for the team's budget (`proxy.access`)."""


async def run_shadow(
    codec: Codec[Any],
    call: Call[Any],
    route: Route,
    account: Callable[[Tally, str, str | None, Usage], None],
    spent: Callable[[Tally], None],
    recorder: Recorder | None,
    shadow_spent: ShadowSpent | None,
) -> tuple[Tally, bytes | None]:
    """Send the copy of `call` to `route`, and account for it; returns its tally and its answer (not a stream's).

    `account(tally, route, model, usage)` prices its usage, `spent(tally)` adds the embeddings its question was billed.
    """
    started, name = time.perf_counter(), route.name
    streams = codec.streams(call.body)
    tally = Tally(shadow=True, stream=streams)
    tally.decided(name, "shadow")
    body: bytes | None = None
    try:
        if streams:
            opened = await route.stream(call)
            async with contextlib.aclosing(opened.events) as events:
                async for events_run in events:
                    found = codec.take_usage(events_run, keep=True)
                    if found.usage is not None:
                        account(tally, name, found.model, found.usage)
        else:
            answer = await route.complete(call)
            body = answer.body
            if answer.usage is not None:
                account(tally, name, answer.model, answer.usage)
    except ProxyError as exc:
        outcome = f"failed with {exc.status} ({exc.message})"
        tally.failed_attempt(name, exc, retried=False)
    else:
        outcome = "answered"
    finally:
        spent(tally)
    if recorder is not None:
        recorder.shadow(tally)
    if shadow_spent is not None and tally.cost:
        await shadow_spent(call.team, tally.cost)
    elapsed = (time.perf_counter() - started) * 1000
    logger.info("shadow %s to route %s %s in %.0f ms", call.headers.get("x-request-id"), name, outcome, elapsed)
    return tally, body
