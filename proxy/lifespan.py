"""Builds and closes the shared resources (upstream clients, routes, pipeline) and reloads the policy file.

One loaded policy file makes a `Generation`. Handlers take `Resources.current` once per request, so a
reload swaps the whole generation atomically while requests in flight finish on the one they started
with. A broken file is logged and the running generation stays.

What outlives a generation is opened here once: the upstream sessions, the response cache's backend,
and the process's local embedding model (`LocalEmbedders`, loaded when something first embeds), which
every generation's rules, RAG routes and semantic cache share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import msgspec
import numpy as np
import numpy.typing as npt

from proxy.access import Access, open_access
from proxy.accounting.cost import PriceTable
from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import priced
from proxy.auth.pairs import PairStore
from proxy.batches import BatchBilling, MemoryClaims, open_claims
from proxy.cache.lookup import SharedCache
from proxy.config.errors import ConfigError
from proxy.config.settings import Settings, UpstreamSettings
from proxy.logs import redact_logs_with
from proxy.models import ModelCatalog
from proxy.pairing import build_pairing, open_pair_store
from proxy.pipeline import Pipeline
from proxy.response_homes import ResponseHomes, open_homes
from proxy.semantic import Knowledge, LocalEmbedders, build_knowledge
from proxy.tasks import BackgroundTasks
from proxy.traffic.log import TrafficLog, open_traffic_log
from proxy.wire.errors import ProxyError
from proxy.wire.redaction import Redactor
from routes import Route, Upstream, UpstreamTimeouts, new_session
from routes.kind import ENDPOINT_KINDS, BuildContext
from routes.knowledge.embedding import LocalEmbedder
from routes.knowledge.retrieval import one_blas_thread
from routes.openai_chat import OpenAIChatSettings
from routes.registry import build_routes
from routes.simulator.server import start_simulator

__all__ = ["Generation", "Resources", "open_resources"]

logger = logging.getLogger("turnout")


@dataclass(frozen=True, slots=True)
class Generation:
    """Everything one version of the policy file builds."""

    settings: Settings
    upstreams: Mapping[str, Upstream]
    pipeline: Pipeline
    knowledge: Knowledge
    """The retrievers over the knowledge indexes and the semantic scorer (none when nothing embeds)."""

    def first_upstream(self) -> Upstream:
        """The default upstream: the policy's first (without a policy, the only one, whose models `/v1/models` lists).

        Its route (`Pipeline.default`) answers the embeddings and completions no route serves.
        """
        return next(iter(self.upstreams.values()))


class Resources:
    """What request handlers share for the app's lifetime; `current` is replaced whole on reload."""

    def __init__(
        self,
        current: Generation,
        tasks: BackgroundTasks,
        models: ModelCatalog,
        homes: ResponseHomes,
        access: Access | None = None,
        batches: BatchBilling | None = None,
        traffic: TrafficLog | None = None,
    ) -> None:
        self.current = current
        self.tasks = tasks
        self.models = models
        """What `GET /v1/models` lists with a policy, refreshed in the background and on each reload."""
        self.homes = homes
        """Where each response id Turnout relayed lives (kept across reloads; in Redis when the cache is there)."""
        self.access = access
        """The keys, limits and ledger (`proxy.access`); None when keys are off and the admin API too."""
        self.batches = batches or BatchBilling(MemoryClaims())
        """Charges each ended Batch API job once, when the pass-through first relays it."""
        self.traffic = traffic
        """The traffic log (`proxy.traffic`); None when `traffic` is off."""
        self.reloads = 0
        """Successful reloads so far."""

    def access_or_fail(self) -> Access:
        """The keys, limits and ledger, which a request that the gate identified always has."""
        if self.access is None:  # pragma: no cover - the gate identifies callers only when it has them
            raise ProxyError("Keys are not open.")
        return self.access


class _Sessions:
    """One pooled HTTP session per distinct upstream definition, reused across reloads while unchanged."""

    def __init__(self, hooks: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self._hooks = hooks  # the attempts' spans (`proxy.tracing`), when tracing is on
        self._by_upstream: dict[UpstreamSettings, aiohttp.ClientSession] = {}
        self._retired: dict[aiohttp.ClientSession, asyncio.Task[None]] = {}

    def get(self, upstream: UpstreamSettings) -> aiohttp.ClientSession:
        session = self._by_upstream.get(upstream)
        if session is None:
            timeouts = UpstreamTimeouts(
                connect=upstream.timeout.connect, read=upstream.timeout.read, total=upstream.timeout.total
            )
            session = self._by_upstream[upstream] = new_session(
                timeouts, max_connections=upstream.max_connections, hooks=self._hooks
            )
        return session

    def retire_unused(self, used: set[UpstreamSettings], grace: float) -> None:
        """Close, after `grace` seconds for the requests still on them, the sessions no upstream uses now."""
        for key in [key for key in self._by_upstream if key not in used]:
            session = self._by_upstream.pop(key)
            self._retired[session] = asyncio.get_running_loop().create_task(self._close_later(session, grace))

    async def _close_later(self, session: aiohttp.ClientSession, grace: float) -> None:
        await asyncio.sleep(grace)
        self._retired.pop(session, None)
        await session.close()

    async def close(self) -> None:
        """Close every session, retired ones included (shutdown has drained their requests already)."""
        for session, closer in list(self._retired.items()):
            closer.cancel()
            await session.close()
        for session in self._by_upstream.values():
            await session.close()


def _default_route(settings: Settings, routes: dict[str, Route], upstreams: Mapping[str, Upstream]) -> Route:
    """The default upstream's route: it serves every endpoint kind, with the caller's own model.

    It answers what no rule is written for and no route serves (embeddings, legacy completions for a
    model no route names). Without a policy, the one route is it (the pass-through of the one upstream,
    made to serve every kind). With one, it is a route of its own, beside the policy's and not listed
    with them (`/readyz`, `/v1/models`), named after its upstream (a bounded label), `-default` added
    when a route of the policy has that name.
    """
    upstream = next(iter(upstreams))
    if settings.deployment.policy is None:
        name, only = next(iter(settings.deployment.routes.items()))
        if isinstance(only, OpenAIChatSettings):
            context = BuildContext(upstreams=upstreams, routes={}, retrievers={})
            routes[name] = msgspec.structs.replace(only, endpoints=ENDPOINT_KINDS).build(name, context)
            return routes[name]
    name = upstream
    while name in routes:
        name += "-default"
    every = OpenAIChatSettings(upstream=upstream, endpoints=ENDPOINT_KINDS)
    return every.build(name, BuildContext(upstreams=upstreams, routes=routes, retrievers={}))


def _build(
    settings: Settings,
    sessions: _Sessions,
    tasks: BackgroundTasks,
    base_url: str | None,
    caches: SharedCache,
    local: LocalEmbedders,
    recorder: Recorder | None,
    redactor: Redactor,
    access: Access | None = None,
    pairs: PairStore | None = None,
) -> Generation:
    upstreams = {
        name: Upstream(
            name,
            base_url or upstream.base_url,
            upstream.api_key.reveal() if upstream.api_key else None,
            sessions.get(upstream),
            redactor=redactor,
        )
        for name, upstream in settings.upstreams.items()
    }
    deployment = settings.deployment
    baseline = deployment.routes[deployment.baseline].model if deployment.baseline is not None else None
    known = {route.model for route in deployment.routes.values() if route.model is not None}
    prices = PriceTable(deployment.prices, baseline_model=baseline, known_models=known)
    knowledge = build_knowledge(deployment, upstreams, local=local)
    routes = build_routes(deployment.routes, upstreams, knowledge.retrievers)
    default = _default_route(settings, routes, upstreams)
    if recorder is not None:
        recorder.routes_known([*routes, *([] if default.name in routes else [default.name])])
        recorder.prices_in_force(prices.version)
    pipeline = Pipeline(
        routes=routes,
        default=default,
        baseline=deployment.baseline,
        semantic=knowledge.scorer,
        policy=deployment.policy,
        retry=deployment.retry,
        breaker=deployment.circuit_breaker,
        deadline=deployment.deadline,
        tasks=tasks,
        named=deployment.model_names(),
        prices=prices,
        recorder=recorder,
        shadow_spent=access.shadow_spent if access is not None else None,
        pairing=build_pairing(settings, pairs, recorder, _local_embed(local)),
        cache=caches.answer_cache(
            deployment.cache, tasks, semantic=deployment.policy is not None and deployment.policy.semantic_cache
        ),
    )
    return Generation(settings=settings, upstreams=upstreams, pipeline=pipeline, knowledge=knowledge)


def _local_embed(local: LocalEmbedders) -> Callable[[Sequence[str]], Awaitable[npt.NDArray[np.float32]]]:
    """The local model's vectors (WordLlama, 256 dimensions), for the parity rules' `semantic` evaluator."""

    async def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return (await local.get(LocalEmbedder.NAME, 256).embed(texts)).vectors

    return embed


async def _embed_examples(generation: Generation, recorder: Recorder | None) -> None:
    """Embed the policy's example utterances before a request needs them; what that cost is recorded."""
    scorer = generation.knowledge.scorer
    if scorer is None:
        return
    spent = await scorer.prepare()
    if spent is not None and recorder is not None:
        recorder.embedded(priced(generation.pipeline.prices, spent.model, spent.tokens))


def _file_stamp(path: str) -> tuple[float, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime, stat.st_size


Stamps = dict[str, tuple[float, int] | None]
"""Files by path, with their modification time and size (None: missing)."""


def _watched(settings: Settings) -> Stamps:
    """The policy file and each knowledge index's manifest (written last: its version marker), stamped now."""
    manifests = {str(index.directory / "manifest.json") for index in settings.deployment.indexes.values()}
    policy = [settings.config_path] if settings.config_path else []
    return {path: _file_stamp(path) for path in [*policy, *sorted(manifests)]}


async def _watch(watched: Callable[[], Settings], reload: Callable[[], None], interval: float, stamps: Stamps) -> None:
    """Call `reload` when the policy file, or the manifest of an index it loaded, differs from its `stamps`.

    A ConfigMap update replaces the file (a symlink swap), which changes both its time and size; `turnout
    index add` replaces an index's manifest last, once the rest is in place. So a new index version on a
    shared volume reaches every pod without a SIGHUP to each. A file that is gone is no change (the next
    one written is). After a reload the files of the policy then running are watched.
    """
    while True:
        await asyncio.sleep(interval)
        now = _watched(watched())
        if any(stamp is not None and stamp != stamps.get(path, stamp) for path, stamp in now.items()):
            reload()
            now = _watched(watched())
        stamps = {path: stamp if stamp is not None else stamps.get(path) for path, stamp in now.items()}


def _follow(reloaded: Settings, access: Access | None, traffic: TrafficLog | None, redactor: Redactor) -> None:
    """What a reload changes of what outlives a generation: the teams' limits, the traffic log's policy."""
    if access is not None:  # the teams' limits follow the file; whether keys are on needs a restart
        access.settings = msgspec.structs.replace(reloaded.deployment.auth, mode=access.settings.mode)
    if traffic is not None:  # its `log`, `redact` and `retention`; the store and queue need a restart
        traffic.follow(reloaded.deployment.traffic, redactor)


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    reload_settings: Callable[[], Settings] | None = None,
    watch_interval: float = 1.0,
    recorder: Recorder | None = None,
    hooks: Sequence[aiohttp.TraceConfig] = (),
) -> AsyncIterator[Resources]:
    """Open the upstream sessions (and the simulated upstream when configured); reload on change or SIGHUP.

    `reload_settings` loads the file again (by default: not at all, as for settings built in code);
    `recorder` is told each policy's routes and breakers, each reload's result, and what is spent at load;
    `hooks` go on every upstream session (the attempts' spans, `proxy.tracing`).
    """
    one_blas_thread()
    async with contextlib.AsyncExitStack() as stack:
        base_url = None
        if settings.simulated:
            simulator = await start_simulator()
            stack.push_async_callback(simulator.aclose)
            base_url = simulator.base_url
            logger.info("simulated upstream listening at %s", base_url)
        sessions, tasks, local = _Sessions(hooks), BackgroundTasks(), LocalEmbedders()
        caches = SharedCache(lambda: local.get(LocalEmbedder.NAME, 256), recorder)  # WordLlama, all 256 dimensions
        stack.push_async_callback(sessions.close)
        stack.push_async_callback(caches.aclose)
        stack.push_async_callback(tasks.drain, settings.server.drain_timeout)
        # The secrets of every policy loaded so far: requests on an earlier one may still be running.
        redactor = Redactor(settings.secrets())
        redact_logs_with(redactor)
        homes = ResponseHomes(open_homes(settings.deployment.cache))
        stack.push_async_callback(homes.homes.aclose)
        claims = open_claims(settings.deployment.cache)
        stack.push_async_callback(claims.aclose)
        models = ModelCatalog()
        access = await stack.enter_async_context(open_access(settings, tasks, recorder))
        deployment = settings.deployment
        traffic = await stack.enter_async_context(
            open_traffic_log(
                deployment.traffic,
                deployment.database_url,
                recorder=recorder,
                secrets=redactor,
                grace=settings.server.drain_timeout,
            )
        )
        pairs = await stack.enter_async_context(open_pair_store(settings))
        stack.push_async_callback(tasks.drain, settings.server.drain_timeout)  # the pairs' writes, before it closes
        resources = Resources(
            _build(settings, sessions, tasks, base_url, caches, local, recorder, redactor, access, pairs),
            tasks,
            models,
            homes,
            access,
            BatchBilling(claims),
            traffic,
        )
        models.follow(settings.deployment, resources.current.upstreams)
        models.start()
        stack.push_async_callback(models.aclose)
        if recorder is not None:
            recorder.follow_breakers(resources.current.pipeline.breakers)
            stack.callback(recorder.follow_breakers, {})
        try:  # the examples, embedded before the first request (or, failing that, by the first that needs them)
            await _embed_examples(resources.current, recorder)
        except ProxyError as exc:
            logger.warning("could not embed the policy's examples yet: %s", exc.message)

        def reload() -> None:
            nonlocal redactor
            if reload_settings is None:
                return
            try:
                reloaded = reload_settings()
                with_new = redactor | Redactor(reloaded.secrets())
                new = _build(reloaded, sessions, tasks, base_url, caches, local, recorder, with_new, access, pairs)
            except ConfigError as exc:
                logger.error("policy reload failed, keeping the running policy: %s", exc)
                if recorder is not None:
                    recorder.reloaded(ok=False)
                return
            if new.knowledge.scorer is not None:
                tasks.spawn(_embed_examples(new, recorder), name="embed-policy-examples")
            redactor = with_new
            redact_logs_with(redactor)
            resources.current = new
            _follow(reloaded, access, traffic, with_new)
            models.follow(reloaded.deployment, new.upstreams)
            if recorder is not None:
                recorder.reloaded(ok=True)
                recorder.follow_breakers(new.pipeline.breakers)
            resources.reloads += 1
            sessions.retire_unused(set(new.settings.upstreams.values()), new.settings.server.drain_timeout)
            rules = len(new.pipeline.policy.rules) if new.pipeline.policy is not None else 0
            logger.info("policy reloaded from %s (%d rules)", settings.config_path, rules)

        if settings.config_path and reload_settings is not None:
            loop = asyncio.get_running_loop()
            # Scoped to the app's life and cancelled with it, not a background job to drain.
            watch = _watch(lambda: resources.current.settings, reload, watch_interval, _watched(settings))
            watcher = loop.create_task(watch, name="policy-watch")
            stack.callback(watcher.cancel)
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows, nor off the main thread
                loop.add_signal_handler(signal.SIGHUP, reload)
                stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        yield resources
