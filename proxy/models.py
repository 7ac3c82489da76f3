"""`ModelCatalog`: what `GET /v1/models` lists with a policy: its routes and aliases, then the upstreams' own models.

Clients check model names against that list (LangChain, LlamaIndex, IDE plugins, the Agents SDK), so it has to hold
every name Turnout accepts: the policy's routes and aliases, and the models of every configured upstream, which a
request may still name. Asking every upstream on every `GET /v1/models` would make the list as slow and as fragile
as the slowest upstream, so each upstream's list is fetched in the background, kept, and fetched again every
`interval` seconds and on each reload. An upstream that fails keeps its last list (it is logged, never the
request's error); the first request after start waits for the first round at most `first_wait` seconds.

Without a policy Turnout is one upstream's pass-through, and `proxy.api` asks that upstream directly, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from proxy.cache.lease import SYSTEM_CLOCK, Clock
from proxy.config.policyfile import Deployment
from proxy.wire.errors import ProxyError
from routes import Upstream, UpstreamPath

__all__ = ["FETCH_TIMEOUT", "FIRST_WAIT", "INTERVAL", "ModelCatalog"]

logger = logging.getLogger("turnout.models")

INTERVAL = 300.0
"""Seconds between two fetches of the upstreams' lists."""
FIRST_WAIT = 2.0
"""The longest the first listing after start (or after a reload) waits for the upstreams' first answers."""
FETCH_TIMEOUT = 30.0
"""How long one upstream's `GET /models` may take before its last list stands for this round."""
_MODELS = UpstreamPath("models")


class _Model(msgspec.Struct, frozen=True):
    id: str
    created: int
    owned_by: str = "turnout"
    object: str = "model"


@dataclass(frozen=True, slots=True)
class _Listed:
    """One upstream's last list, by model id (each the upstream's own object), and where it was fetched."""

    base_url: str
    models: Mapping[str, bytes]


class ModelCatalog:
    """The policy's routes and aliases and the upstreams' models, kept fresh in the background.

    `follow(...)` names what to list (at start and on each reload, which fetches again at once); `start()` runs the
    refresh loop until `aclose()`. Handlers read `listing()` and `get(id)`, which never call an upstream themselves.
    """

    def __init__(
        self, *, clock: Clock = SYSTEM_CLOCK, interval: float = INTERVAL, first_wait: float = FIRST_WAIT
    ) -> None:
        self._clock, self._interval, self._first_wait = clock, interval, first_wait
        self._upstreams: Mapping[str, Upstream] = {}
        self._routes: dict[str, bytes] = {}
        self._fetch = False
        self._listed: dict[str, _Listed] = {}
        self._wake = asyncio.Event()
        self._fetched = asyncio.Event()
        """Set when a round has ended since the last `follow()`: the first listing waits for it (bounded)."""
        self._loop: asyncio.Task[None] | None = None
        self.rounds = 0
        """Rounds of fetches ended so far."""
        self._round_ended = asyncio.Condition()

    def follow(self, deployment: Deployment, upstreams: Mapping[str, Upstream]) -> None:
        """List the routes and aliases of `deployment`, then the models of `upstreams` (none without a policy).

        A route's `created` is now, when its policy was loaded; the upstreams are fetched again at once.
        """
        created = int(time.time())
        names = [*deployment.routes, *deployment.aliases] if deployment.policy is not None else []
        self._routes = {name: msgspec.json.encode(_Model(id=name, created=created)) for name in names}
        self._upstreams, self._fetch = upstreams, deployment.policy is not None
        self._fetched.clear()
        self._wake.set()

    def start(self) -> None:
        """Run the refresh loop (in the running event loop) until `aclose()`."""
        self._loop = asyncio.get_running_loop().create_task(self._refresh_forever(), name="models-refresh")

    async def aclose(self) -> None:
        """Stop the refresh loop."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def listing(self) -> list[bytes]:
        """Every model object to list: the routes and aliases, then each upstream's models not already named."""
        if self._fetch:
            await self._clock.wait(self._fetched, self._first_wait)
        merged = dict(self._routes)
        for models in self._upstream_lists():
            for model_id, model in models.items():
                merged.setdefault(model_id, model)
        return list(merged.values())

    async def get(self, model_id: str) -> bytes | None:
        """The object of one route, alias or upstream model (the upstream's own); None when nothing has that id."""
        if model_id in self._routes:
            return self._routes[model_id]
        if self._fetch:
            await self._clock.wait(self._fetched, self._first_wait)
        return next((models[model_id] for models in self._upstream_lists() if model_id in models), None)

    def _upstream_lists(self) -> Iterator[Mapping[str, bytes]]:
        """The last list of each upstream followed now, in the policy's order (none from where it was before)."""
        for name, upstream in self._upstreams.items():
            listed = self._listed.get(name)
            if listed is not None and listed.base_url == upstream.base_url:
                yield listed.models

    async def after_round(self, rounds: int) -> None:
        """Wait until `rounds` rounds of fetches have ended (what a test waits for, instead of time)."""
        async with self._round_ended:
            await self._round_ended.wait_for(lambda: self.rounds >= rounds)

    async def _refresh_forever(self) -> None:
        while True:
            self._wake.clear()
            if self._fetch:
                upstreams = dict(self._upstreams)
                await asyncio.gather(*(self._refresh(name, upstream) for name, upstream in upstreams.items()))
                self._listed = {name: self._listed[name] for name in self._upstreams if name in self._listed}
            async with self._round_ended:
                self.rounds += 1
                self._round_ended.notify_all()
            if not self._wake.is_set():  # a reload during the round fetches again, and its listing waits for that
                self._fetched.set()
            await self._clock.wait(self._wake, self._interval)

    async def _refresh(self, name: str, upstream: Upstream) -> None:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                body = await upstream.get(_MODELS, {})
            models = _models_of(body, name)
        except ProxyError as exc:
            logger.warning("could not list the models of the upstream '%s', keeping its last list: %s", name, exc)
            return
        except TimeoutError:
            logger.warning("the upstream '%s' did not list its models within %.0f s", name, FETCH_TIMEOUT)
            return
        except Exception as exc:  # noqa: BLE001 - whatever one upstream sends, the loop and the other lists go on
            logger.warning("could not list the models of the upstream '%s': %s", name, type(exc).__name__)
            return
        self._listed[name] = _Listed(base_url=upstream.base_url, models=models)


def _models_of(body: bytes, upstream: str) -> dict[str, bytes]:
    """The model objects of an upstream's `GET /models` answer, by id, each as the upstream sent it.

    OpenAI's required fields are filled in where an OpenAI-compatible server leaves them out (some omit `created`
    or `owned_by`), so that a client validating the list accepts it; entries without a string `id` are dropped.
    """
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ProxyError(f"its answer is not JSON ({exc})") from exc
    data = decoded.get("data") if isinstance(decoded, dict) else None
    if not isinstance(data, list):
        raise ProxyError("its answer has no `data` list")
    models: dict[str, bytes] = {}
    for entry in data:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"] not in models:
            models[entry["id"]] = msgspec.json.encode(_complete(entry, upstream))
    return models


def _complete(entry: dict[str, Any], upstream: str) -> dict[str, Any]:
    completed = dict(entry)
    completed["object"] = "model"
    if not isinstance(entry.get("created"), int) or isinstance(entry.get("created"), bool):
        completed["created"] = 0
    if not isinstance(entry.get("owned_by"), str):
        completed["owned_by"] = upstream
    return completed
