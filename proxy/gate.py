"""The gate: with `auth: keys`, every request names a Turnout key, and is let in only within its limits.

Raw ASGI, between the request-id middleware and the app, so that it sees every request (the router's own
404s included) before anything else runs, and the end of every response. For each request it:

1. leaves alone what needs no key: `/healthz`, `/readyz`, `/metrics`, the admin API (its own key), and
   everything when `auth` is off (anyone who can reach Turnout calls through, as before);
2. refuses a client address that failed too many key checks in the last minute (429), before looking;
3. reads the key (`Authorization: Bearer tk-...`, as the OpenAI SDKs send it, or `api-key`) and finds it in
   the `KeyRing` (a digest, compared in constant time): missing, unknown, revoked or expired → 401, all
   with one message, so that the answer never says whether a key exists;
4. notes who is calling (the key's name and team) for the policy, the cache, the access log and metrics;
5. admits the request against the key's and its team's limits (`proxy.auth.limits`): here, for the requests
   that no route answers (files, models, ...); for a routed one, once the policy has chosen its route, with a
   reservation of what its answer may cost (`admit`, from the pipeline);
6. when the response has ended, settles what the request really cost and used, and writes it to the ledger.

Nothing here logs a key, and no error message quotes one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from proxy.access import Access, Identity
from proxy.asgi import send_json
from proxy.middleware import tally_of
from proxy.wire.errors import ProxyError

__all__ = ["Gate", "Identity", "identity_of"]

_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and the scrape: a cluster's kubelet and Prometheus hold no Turnout key."""
_ADMIN = "/admin"
_IDENTITY = "turnout_identity"


def identity_of(scope: Scope) -> Identity | None:
    """The caller the gate identified for this request (None: keys are off, or the path needs none)."""
    identity: Identity | None = scope.get("state", {}).get(_IDENTITY)
    return identity


class Gate:
    """The ASGI layer that lets only callers with a valid key in (see the module docstring)."""

    def __init__(self, app: ASGIApp, access: Callable[[], Access | None], *, routed_paths: Iterable[str]) -> None:
        self.app = app
        self._access = access
        self._routed = frozenset(routed_paths)
        """`POST` paths the pipeline answers: admitted there, once their route is chosen."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        access = self._access() if scope["type"] == ScopeType.HTTP else None
        path = scope.get("path", "")
        if access is None or not access.settings.keys or path in _OPEN_PATHS or _is_admin(path):
            await self.app(scope, receive, send)
            return
        method = cast("HTTPScope", scope)["method"]
        tally = tally_of(scope)
        try:
            identity = await access.identify(scope)
            tally.caller, tally.team, tally.keyed = identity.key.name, identity.key.team, True
            if not (method == "POST" and path in self._routed):
                await access.admit(identity)
        except ProxyError as exc:
            await send_json(send, exc.body(), [(k.encode(), v.encode()) for k, v in exc.headers.items()], exc.status)
            return
        scope.setdefault("state", {})[_IDENTITY] = identity
        try:
            await self.app(scope, receive, send)
        finally:
            access.settle_soon(identity, tally)


def _is_admin(path: str) -> bool:
    return path == _ADMIN or path.startswith(_ADMIN + "/")
