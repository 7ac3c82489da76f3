"""The policy file: upstreams, routes, aliases, prices, baseline, retry and breaker settings, and the rules.

One YAML file describes a deployment. This module checks everything but the rules (which
`policies.load_policy` compiles) and names the file and line of whatever is wrong. Each route is read as
the settings of its kind (`routes.registry`), which checks it against the rest of the file. A file without
`rules` is the pass-through of a single upstream, with the caller's own `model`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from policies import Experiment, PolicyEngine, PolicyError, load_experiments, load_policy
from proxy.config.errors import ConfigError
from proxy.config.rag import IndexLoader, embedder_identity
from proxy.config.sections import (
    AuthSettings,
    BreakerSettings,
    CacheSettings,
    DeadlineSettings,
    EmbedderSettings,
    PassthroughSettings,
    Price,
    RetrySettings,
    TeamLimits,
    TrafficSettings,
    UpstreamFile,
)
from proxy.config.yamlsource import Key, YamlDocument
from proxy.wire.redisurl import redis_url_problem
from routes import KnowledgeIndex
from routes.kind import CheckContext
from routes.openai_chat import OpenAIChatSettings
from routes.registry import AnyRouteSettings, in_build_order, kind_of, tagged

__all__ = ["PASSTHROUGH_LABEL", "Deployment", "parse_deployment"]


class _PolicyFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: dict[str, Any] = {}
    upstreams: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    prices: dict[str, Any] = {}
    baseline: str | None = None
    model_selects_route: bool = True
    retry: RetrySettings = RetrySettings()
    circuit_breaker: BreakerSettings = BreakerSettings()
    deadline: DeadlineSettings = DeadlineSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    cache: CacheSettings = CacheSettings()
    passthrough: PassthroughSettings = PassthroughSettings()
    auth: Any = None
    database_url: Annotated[str, msgspec.Meta(pattern="^(sqlite|postgres|postgresql)://")] | None = None
    rules: Any = None
    canary_ttl: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    parity_redis_url: str | None = None
    parity_redis_prefix: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_.:-]{1,64}$")] = "turnout"
    tracing: Any = None  # read by `proxy.config.tracing`
    traffic: TrafficSettings = TrafficSettings()


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """The checked policy file but its upstreams (which carry keys), rules compiled."""

    routes: dict[str, AnyRouteSettings]
    """Every route's settings, of its kind (`routes.registry`): those that answer themselves first, then
    those that answer with another (RAG), each in the file's order. Routes are built and listed so."""
    aliases: dict[str, str] = {}
    prices: dict[str, Price] = {}
    baseline: str | None = None
    model_selects_route: bool = True
    """A request whose `model` is a route's name or alias goes to that route, bypassing the rules."""
    retry: RetrySettings = RetrySettings()
    circuit_breaker: BreakerSettings = BreakerSettings()
    deadline: DeadlineSettings = DeadlineSettings()
    cache: CacheSettings = CacheSettings()
    policy: PolicyEngine | None = None
    """None: no rules, every request takes the one route with the caller's `model`."""
    experiments: dict[str, Experiment] = {}
    """The rules' `parity:` and `canary:` blocks, by rule name (`policies.experiments`)."""
    canary_ttl: float = 1.0
    """Seconds a replica keeps a canary's state before reading it again (`canary_ttl`)."""
    parity_redis_url: str | None = None
    """Where pairs and canaries live when not in the database (a Redis URL; it may carry a password)."""
    parity_redis_prefix: str = "turnout"
    """What their Redis keys start with (`<prefix>:parity:...`)."""
    embedder: EmbedderSettings = EmbedderSettings()
    indexes: dict[str, KnowledgeIndex] = {}
    """The knowledge index of each route that searches one (RAG), loaded and checked against the embedder."""
    passthrough: str | None = None
    """The upstream that the requests Turnout does not route are passed through to (None: the default one)."""
    auth: AuthSettings = AuthSettings()
    """Who may call, and their teams' limits (`proxy.gate`)."""
    database_url: str | None = None
    """Where keys and the spend ledger live: `sqlite:///path` or `postgresql://...` (None: the SQLite default).
    It may carry a password, so it is never shown whole."""
    traffic: TrafficSettings = TrafficSettings()
    """The traffic log (`proxy.traffic`): off by default."""

    def model_names(self) -> dict[str, str]:
        """Model names that select a route directly (route names and aliases), when the policy allows it."""
        if self.policy is None or not self.model_selects_route:
            return {}
        return {**{name: name for name in self.routes}, **self.aliases}

    @property
    def uses_embedder(self) -> bool:
        """Whether anything here embeds: a route's knowledge index or a meaning-based condition."""
        return bool(self.indexes) or (self.policy is not None and bool(self.policy.semantic_needs))


StructT = TypeVar("StructT", bound=msgspec.Struct)


def _entries(
    document: YamlDocument, section: str, entries: Mapping[str, Any], kind: type[StructT]
) -> dict[str, StructT]:
    """Each entry of a named-entries section checked on its own, so that errors can name the entry."""
    return {name: document.convert(value, kind, (section, name)) for name, value in entries.items()}


def _routes(document: YamlDocument, entries: Mapping[str, Any]) -> dict[str, AnyRouteSettings]:
    """The `routes` entries as the settings of their kinds (no `kind`: `openai`), in build order."""
    routes: dict[str, AnyRouteSettings] = {}
    for name, entry in entries.items():
        try:
            routes[name] = msgspec.convert(tagged(entry), AnyRouteSettings)
        except msgspec.ValidationError as exc:
            raise document.invalid(exc, ("routes", name)) from exc
    return in_build_order(routes)


def _context(
    document: YamlDocument,
    name: str,
    upstreams: Sequence[str],
    routes: Mapping[str, AnyRouteSettings],
    loader: IndexLoader,
) -> CheckContext:
    """What route `name` is checked against; its errors name the file and line of its entry's values."""

    def fail(where: Sequence[Key], message: str) -> ConfigError:
        return document.error(("routes", name, *where), message)

    def load_index(directory: str, where: Sequence[Key]) -> KnowledgeIndex:
        return loader.load(name, directory, ("routes", name, *where))

    return CheckContext(upstreams=upstreams, routes=routes, fail=fail, load_index=load_index)


def _check_routes(
    document: YamlDocument,
    file: _PolicyFile,
    upstreams: Sequence[str],
    routes: Mapping[str, AnyRouteSettings],
    policy: PolicyEngine,
) -> dict[str, KnowledgeIndex]:
    """The embedder checked, then each route by its kind; returns the knowledge indexes the routes search."""
    if file.embedder.upstream is not None and file.embedder.upstream not in upstreams:
        raise document.error(("embedder", "upstream"), f"embedder: unknown upstream '{file.embedder.upstream}'")
    loader = IndexLoader(document, embedder_identity(document, file.embedder))
    indexes = {}
    for name, route in routes.items():
        index = route.check(name, _context(document, name, upstreams, routes, loader))
        if index is not None:
            indexes[name] = index
    for name in sorted(policy.semantic_needs.retrieval_routes - set(indexes)):
        raise document.error(("rules",), f"retrieval_score names route '{name}', which is not a rag route")
    return indexes


def _check_cache(document: YamlDocument, cache: CacheSettings) -> None:
    if cache.backend == "redis" and cache.url is None:
        raise document.error(("cache", "backend"), "cache: the redis backend needs a `url`")
    problem = redis_url_problem(cache.url) if cache.url is not None else None
    if problem is not None:  # here, not at the first connection: `turnout check` and start-up both refuse it
        raise document.error(("cache", "url"), f"cache.url is not a Redis URL: {problem}")


def _check_traffic(document: YamlDocument, traffic: TrafficSettings) -> None:
    for index, pattern in enumerate(traffic.redact.patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            where = ("traffic", "redact", "patterns", index)
            message = f"traffic.redact.patterns: {pattern!r} is not a regular expression: {exc}"
            raise document.error(where, message) from exc


PASSTHROUGH_LABEL = "passthrough"
"""The `route` label of the requests passed through (`proxy.passthrough`): no route may take that name."""


def _check_names(document: YamlDocument, file: _PolicyFile, routes: Mapping[str, AnyRouteSettings]) -> None:
    if PASSTHROUGH_LABEL in routes:
        message = f"route '{PASSTHROUGH_LABEL}': the name is reserved (the metrics' label of passed-through requests)"
        raise document.error(("routes", PASSTHROUGH_LABEL), message)
    for alias, target in file.aliases.items():
        if target not in routes:
            raise document.error(("aliases", alias), f"alias '{alias}' names unknown route '{target}'")
        if alias in routes:
            raise document.error(("aliases", alias), f"alias '{alias}' is already a route's name")
    if file.baseline is not None:
        # Savings are priced against the baseline's model: a route that answers with another has none of its own.
        baseline = routes.get(file.baseline)
        if baseline is None:
            raise document.error(("baseline",), f"baseline '{file.baseline}' is not a route")
        if baseline.answers_with is not None:
            message = f"baseline '{file.baseline}' is a {kind_of(baseline)} route, not a chat route"
            raise document.error(("baseline",), message)


def _passthrough(document: YamlDocument, file: _PolicyFile, upstreams: Sequence[str]) -> str | None:
    """The `passthrough` upstream's name, checked against the file's upstreams."""
    name = file.passthrough.upstream
    if name is not None and name not in upstreams:
        raise document.error(("passthrough", "upstream"), f"passthrough: unknown upstream '{name}'")
    return name


_TEAM = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _auth(document: YamlDocument, raw: Any) -> AuthSettings:
    """`auth: keys`, `auth: off` (YAML reads a bare `off` as false) or the whole block."""
    if raw is None:
        return AuthSettings()
    if raw is False or raw == "off":
        return AuthSettings(mode="off")
    if raw == "keys":
        return AuthSettings(mode="keys")
    if not isinstance(raw, dict):
        raise document.error(("auth",), "auth: `keys`, `off` or a mapping (mode, teams, redis_url, ...)")
    if raw.get("mode") is False:  # `mode: off`
        raw = {**raw, "mode": "off"}
    teams = raw.get("teams") or {}
    if not isinstance(teams, dict):
        raise document.error(("auth", "teams"), "auth.teams: a mapping of team names to their limits")
    auth = document.convert({**raw, "teams": {}}, AuthSettings, ("auth",))
    for name in teams:
        if not isinstance(name, str) or not _TEAM.fullmatch(name):
            raise document.error(("auth", "teams", name), f"auth.teams: {name!r} is not a team name ({_TEAM.pattern})")
    limits = {name: document.convert(value, TeamLimits, ("auth", "teams", name)) for name, value in teams.items()}
    auth = msgspec.structs.replace(auth, teams=limits)
    problem = redis_url_problem(auth.redis_url) if auth.redis_url is not None else None
    if problem is not None:
        raise document.error(("auth", "redis_url"), f"auth.redis_url is not a Redis URL: {problem}")
    return auth


def _parity_redis(document: YamlDocument, url: str | None) -> str | None:
    problem = redis_url_problem(url) if url is not None else None
    if problem is not None:
        raise document.error(("parity_redis_url",), f"parity_redis_url is not a Redis URL: {problem}")
    return url


def parse_deployment(
    document: YamlDocument, data: Mapping[str, Any], default_upstream: UpstreamFile
) -> tuple[dict[str, UpstreamFile], Deployment]:
    """Check the file's sections (env references already expanded in `data`) and compile its rules.

    Returns the upstreams (with their keys) and the rest. Without `rules`, the file may declare at most
    one upstream and no routes: Turnout then forwards everything there (to `default_upstream`, from
    `OPENAI_*`, when the file names none).

    Raises:
        ConfigError: the first problem found, as `file:line: what`.
    """
    file = document.convert(data, _PolicyFile)
    upstreams = _entries(document, "upstreams", file.upstreams, UpstreamFile)
    routes = _routes(document, file.routes)
    prices = _entries(document, "prices", file.prices, Price)
    _check_names(document, file, routes)
    _check_cache(document, file.cache)
    _check_traffic(document, file.traffic)
    auth, database_url = _auth(document, file.auth), file.database_url
    if file.rules is None:
        if file.routes or file.aliases or len(file.upstreams) > 1:
            raise document.error(("routes",), "routes and several upstreams need `rules`")
        name, upstream = next(iter(upstreams.items())) if file.upstreams else ("openai", default_upstream)
        deployment = Deployment(
            routes={name: OpenAIChatSettings(upstream=name)},
            passthrough=_passthrough(document, file, [name]),
            retry=file.retry,
            circuit_breaker=file.circuit_breaker,
            deadline=file.deadline,
            cache=file.cache,
            prices=prices,
            auth=auth,
            database_url=database_url,
            traffic=file.traffic,
        )
        return {name: upstream}, deployment
    if not file.routes:
        raise document.error(("rules",), "rules need `routes` to send requests to")
    try:
        policy = load_policy(file.rules, list(file.routes), locate=lambda where: document.locate(where))
        experiments = load_experiments(
            file.rules, list(file.routes), locate=lambda where: document.locate(where), base=Path(document.path).parent
        )
    except PolicyError as exc:
        raise ConfigError(str(exc)) from exc
    return upstreams, Deployment(
        routes=routes,
        aliases=file.aliases,
        prices=prices,
        baseline=file.baseline,
        model_selects_route=file.model_selects_route,
        retry=file.retry,
        circuit_breaker=file.circuit_breaker,
        deadline=file.deadline,
        cache=file.cache,
        policy=policy,
        experiments=experiments,
        canary_ttl=file.canary_ttl,
        parity_redis_url=_parity_redis(document, file.parity_redis_url),
        parity_redis_prefix=file.parity_redis_prefix,
        embedder=file.embedder,
        indexes=_check_routes(document, file, list(upstreams), routes, policy),
        passthrough=_passthrough(document, file, list(upstreams)),
        auth=auth,
        database_url=database_url,
        traffic=file.traffic,
    )
