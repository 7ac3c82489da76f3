"""Builds and closes the shared resources (upstream client, routes, pipeline) → `Resources`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.pipeline import ChatPipeline
from proxy.settings import Settings
from routes import OpenAIChatRoute, Upstream, UpstreamTimeouts, new_session
from routes.simulated import start_simulator

__all__ = ["Resources", "open_resources"]

logger = logging.getLogger("turnout")


@dataclass(frozen=True, slots=True)
class Resources:
    """What request handlers share for the app's lifetime."""

    settings: Settings
    upstream: Upstream
    pipeline: ChatPipeline


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open the upstream session (and the simulated upstream, when configured) and close them on exit."""
    async with contextlib.AsyncExitStack() as stack:
        base_url = settings.upstream.base_url
        if settings.simulated:
            simulator = await start_simulator()
            stack.push_async_callback(simulator.aclose)
            base_url = simulator.base_url
            logger.info("simulated upstream listening at %s", base_url)
        timeouts = settings.upstream.timeout
        session = new_session(
            UpstreamTimeouts(connect=timeouts.connect, read=timeouts.read, total=timeouts.total),
            max_connections=settings.upstream.max_connections,
        )
        stack.push_async_callback(session.close)
        key = settings.upstream.api_key
        upstream = Upstream(settings.upstream.name, base_url, key.reveal() if key else None, session)
        route = OpenAIChatRoute(settings.upstream.name, upstream)
        yield Resources(settings=settings, upstream=upstream, pipeline=ChatPipeline(route))
