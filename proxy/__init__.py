"""Turnout, an OpenAI-compatible routing proxy; the app factory is `proxy.app.create_app`.

The package itself holds only the version: importing `proxy.wire` (as `routes` and `policies` do) must
not pull in the app.
"""

from __future__ import annotations

from proxy._version import __version__

__all__ = ["__version__"]
