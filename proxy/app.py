"""`create_app(settings) -> Litestar`: wiring only (handlers, exception handlers, lifespan, middleware)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.exceptions import HTTPException

from proxy.api import HANDLERS, handle_http_exception, handle_proxy_error, handle_unexpected_error
from proxy.errors import ProxyError
from proxy.lifespan import open_resources
from proxy.middleware import RequestIdMiddleware
from proxy.settings import Settings, load_settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Litestar:
    """The Turnout ASGI app; `settings` default to `load_settings()` (how `turnout serve` workers build it)."""
    resolved = settings if settings is not None else load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_resources(resolved) as resources:
            app.state.resources = resources
            try:
                yield
            finally:
                del app.state.resources

    app = Litestar(
        route_handlers=HANDLERS,
        exception_handlers={
            ProxyError: handle_proxy_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected_error,
        },
        lifespan=[lifespan],
        request_max_body_size=resolved.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )
    # Outermost, so that even the router's own 404s and 405s carry the request id.
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    return app
