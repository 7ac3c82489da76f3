"""Turnout, an OpenAI-compatible routing proxy. Public surface: `create_app`, `__version__`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy._version import __version__

if TYPE_CHECKING:
    from proxy.app import create_app

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: `routes` imports the leaf modules `proxy.errors` and `proxy.schemas`, which must not pull in
    # the app (and with it `routes` again) just by importing this package.
    if name == "create_app":
        from proxy.app import create_app

        return create_app
    raise AttributeError(f"module 'proxy' has no attribute {name!r}")
