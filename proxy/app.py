"""`create_app(settings) -> Litestar`: wiring only (handlers, exception handlers, lifespan, middleware)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp

from proxy.access import Access
from proxy.accounting.accesslog import AccessLog
from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
from proxy.api import (
    HANDLERS,
    ROUTED_PATHS,
    handle_http_exception,
    handle_outcome_error,
    handle_proxy_error,
    handle_unexpected_error,
)
from proxy.config.settings import Settings, load_settings
from proxy.cors import Cors
from proxy.feedback import feedback
from proxy.gate import Gate
from proxy.lifespan import open_resources
from proxy.middleware import RequestIdMiddleware
from proxy.outcome import OutcomeError
from proxy.tracing import Tracing
from proxy.wire.errors import ProxyError

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, reload: Callable[[], Settings] | None = None) -> Litestar:
    """The Turnout ASGI app.

    Args:
        settings: Defaults to `load_settings()`, which is how `turnout serve` workers build it; the policy
            file is then reloaded the same way when it changes or on SIGHUP.
        reload: How to load the settings again on reload, for settings given here (None: never reload).
    """
    resolved = settings if settings is not None else load_settings()
    reload_settings = reload if settings is not None else load_settings
    metrics = Metrics(multiprocess_dir=resolved.metrics_dir)
    server = resolved.server
    access_log = AccessLog(enabled=server.access_log, content=server.log_content)
    recorder = Recorder(metrics, access_log, metric_keys=resolved.deployment.auth.metric_keys)
    tracing = Tracing(resolved.tracing) if resolved.tracing.traces_url is not None else None
    hooks = [tracing.trace_config] if tracing is not None else []

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_resources(resolved, reload_settings=reload_settings, recorder=recorder, hooks=hooks) as res:
            app.state.resources = res
            metrics.start_flushing(asyncio.get_running_loop())
            # What startup built lives as long as the worker, out of the collector's sight: a full collection then
            # walks the requests' objects only, not 100,000 more (31 ms a time here, a stall for every open stream).
            gc.freeze()
            try:
                yield
            finally:
                del app.state.resources
                metrics.close()
                if tracing is not None:
                    await asyncio.to_thread(tracing.close)

    app = Litestar(
        route_handlers=[*HANDLERS, feedback],
        exception_handlers={
            ProxyError: handle_proxy_error,
            OutcomeError: handle_outcome_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected_error,
        },
        lifespan=[lifespan],
        request_max_body_size=resolved.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
        state=State({"recorder": recorder}),
    )

    def access() -> Access | None:
        resources = app.state.get("resources")
        return resources.access if resources is not None else None

    # With keys on, only callers with a valid key get through, within their limits.
    handler: ASGIApp = Gate(app.asgi_handler, access, routed_paths=ROUTED_PATHS)
    # Browser clients, when configured: their preflights answered before the router sees them (and the gate).
    handler = handler if server.cors is None else Cors(handler, server.cors)
    # Outermost, so that even the router's own 404s and 405s (and preflights) carry the request id.
    capture = resolved.deployment.traffic.enabled  # the traffic log reads each response as it was sent
    app.asgi_handler = RequestIdMiddleware(handler, recorder=recorder, tracing=tracing, capture=capture)
    return app
