"""The policy file: upstreams, routes, aliases, prices, baseline, retry and breaker settings, and the rules.

One YAML file describes a deployment. This module checks everything but the rules (which
`policies.load_policy` compiles) and names the file and line of whatever is wrong. A file without
`rules` is the pass-through of a single upstream, with the caller's own `model`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from policies import PolicyEngine, PolicyError, load_policy
from proxy.config.rag import KnowledgeError, embedder_identity, load_indexes
from proxy.config.sections import (
    BreakerSettings,
    CacheSettings,
    EmbedderSettings,
    Price,
    RagSettings,
    RetrySettings,
    RouteSettings,
    UpstreamFile,
)
from proxy.config.yamlsource import YamlDocument
from proxy.wire.redisurl import redis_url_problem
from routes import KnowledgeIndex

__all__ = ["Deployment", "PolicyFileError", "parse_deployment"]


class PolicyFileError(Exception):
    """The policy file is invalid; the message starts with `file:line`."""


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
    embedder: EmbedderSettings = EmbedderSettings()
    cache: CacheSettings = CacheSettings()
    rules: Any = None


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """The checked policy file but its upstreams (which carry keys), rules compiled."""

    routes: dict[str, RouteSettings]
    aliases: dict[str, str] = {}
    prices: dict[str, Price] = {}
    baseline: str | None = None
    model_selects_route: bool = True
    """A request whose `model` is a route's name or alias goes to that route, bypassing the rules."""
    retry: RetrySettings = RetrySettings()
    circuit_breaker: BreakerSettings = BreakerSettings()
    cache: CacheSettings = CacheSettings()
    policy: PolicyEngine | None = None
    """None: no rules, every request takes the one route with the caller's `model`."""
    rag: dict[str, RagSettings] = {}
    """The RAG routes (`kind: rag`), beside the chat routes of `routes`."""
    embedder: EmbedderSettings = EmbedderSettings()
    indexes: dict[str, KnowledgeIndex] = {}
    """Each RAG route's knowledge index, loaded and checked against the embedder."""

    def model_names(self) -> dict[str, str]:
        """Model names that select a route directly (route names and aliases), when the policy allows it."""
        if self.policy is None or not self.model_selects_route:
            return {}
        return {**{name: name for name in (*self.routes, *self.rag)}, **self.aliases}

    @property
    def uses_embedder(self) -> bool:
        """Whether anything here embeds: a RAG route or a meaning-based condition."""
        return bool(self.rag) or (self.policy is not None and bool(self.policy.semantic_needs))


_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _keys(msgspec_path: str) -> list[str | int]:
    """`upstreams.openai.timeout[0]` → ["upstreams", "openai", "timeout", 0]."""
    return [int(index) if index else name for name, index in _PATH_PART.findall(msgspec_path)]


_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def _convert(document: YamlDocument, data: Any, kind: type[StructT], prefix: tuple[str, ...] = ()) -> StructT:
    """`data` as a `kind`, or an error naming the file, the line and the dotted path of the bad value."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT.search(message)
        keys = [*prefix, *_keys(match.group(1) if match else "")]
        what = _AT.sub("", message)
        dotted = ".".join(str(key) for key in keys)
        raise PolicyFileError(f"{document.locate(keys)}: {dotted + ': ' if dotted else ''}{what}") from exc


StructT = TypeVar("StructT", bound=msgspec.Struct)


def _entries(
    document: YamlDocument, section: str, entries: Mapping[str, Any], kind: type[StructT]
) -> dict[str, StructT]:
    """Each entry of a named-entries section checked on its own, so that errors can name the entry."""
    return {name: _convert(document, value, kind, (section, name)) for name, value in entries.items()}


@dataclass(frozen=True, slots=True)
class _Sections:
    upstreams: dict[str, UpstreamFile]
    routes: dict[str, RouteSettings]
    prices: dict[str, Price]
    rag: dict[str, RagSettings]


def _is_rag(entry: Any) -> bool:
    return isinstance(entry, Mapping) and entry.get("kind") == "rag"


def _knowledge(document: YamlDocument, file: _PolicyFile, sections: _Sections, policy: PolicyEngine) -> dict[str, Any]:
    """The Deployment fields of the RAG routes and the embedder, checked; their indexes loaded."""

    def fail(where: Sequence[str | int], message: str) -> PolicyFileError:
        return PolicyFileError(f"{document.locate(where)}: {message}")

    for name, rag in sections.rag.items():
        if rag.answer_with not in sections.routes:
            known = ", ".join(sections.routes)
            raise fail(("routes", name, "answer_with"), f"route '{name}': answer_with must be a chat route ({known})")
    for name in sorted(policy.semantic_needs.retrieval_routes - set(sections.rag)):
        raise fail(("rules",), f"retrieval_score names route '{name}', which is not a rag route")
    if file.embedder.upstream is not None and file.embedder.upstream not in sections.upstreams:
        raise fail(("embedder", "upstream"), f"embedder: unknown upstream '{file.embedder.upstream}'")
    try:
        embedder_identity(file.embedder)
        indexes = load_indexes(sections.rag, file.embedder, Path(document.path).parent)
    except KnowledgeError as exc:
        raise fail(("routes", exc.route, "index") if exc.route else ("embedder",), str(exc)) from exc
    return {"rag": sections.rag, "embedder": file.embedder, "indexes": {k: v[1] for k, v in indexes.items()}}


def _check_cache(document: YamlDocument, cache: CacheSettings) -> None:
    if cache.backend == "redis" and cache.url is None:
        raise PolicyFileError(f"{document.locate(('cache', 'backend'))}: cache: the redis backend needs a `url`")
    problem = redis_url_problem(cache.url) if cache.url is not None else None
    if problem is not None:  # here, not at the first connection: `turnout check` and start-up both refuse it
        raise PolicyFileError(f"{document.locate(('cache', 'url'))}: cache.url is not a Redis URL: {problem}")


def _check_names(document: YamlDocument, file: _PolicyFile, sections: _Sections) -> None:
    def fail(where: Sequence[str | int], message: str) -> PolicyFileError:
        return PolicyFileError(f"{document.locate(where)}: {message}")

    for name, route in sections.routes.items():
        if route.upstream not in sections.upstreams:
            known = ", ".join(sections.upstreams) or "none"
            raise fail(("routes", name, "upstream"), f"route '{name}': unknown upstream '{route.upstream}' ({known})")
    for alias, target in file.aliases.items():
        if target not in file.routes:
            raise fail(("aliases", alias), f"alias '{alias}' names unknown route '{target}'")
        if alias in file.routes:
            raise fail(("aliases", alias), f"alias '{alias}' is already a route's name")
    if file.baseline is not None and file.baseline not in sections.routes:
        # Savings are priced against the baseline's model: a RAG route has none of its own.
        kind = "a rag route, not a chat route" if file.baseline in file.routes else "not a route"
        raise fail(("baseline",), f"baseline '{file.baseline}' is {kind}")


def parse_deployment(
    document: YamlDocument, data: Mapping[str, Any], default_upstream: UpstreamFile
) -> tuple[dict[str, UpstreamFile], Deployment]:
    """Check the file's sections (env references already expanded in `data`) and compile its rules.

    Returns the upstreams (with their keys) and the rest. Without `rules`, the file may declare at most
    one upstream and no routes: Turnout then forwards everything there (to `default_upstream`, from
    `OPENAI_*`, when the file names none).

    Raises:
        PolicyFileError: the first problem found, as `file:line: what`.
    """
    file = _convert(document, data, _PolicyFile)
    chat = {name: entry for name, entry in file.routes.items() if not _is_rag(entry)}
    sections = _Sections(
        upstreams=_entries(document, "upstreams", file.upstreams, UpstreamFile),
        routes=_entries(document, "routes", chat, RouteSettings),
        prices=_entries(document, "prices", file.prices, Price),
        rag=_entries(document, "routes", {k: v for k, v in file.routes.items() if k not in chat}, RagSettings),
    )
    _check_names(document, file, sections)
    _check_cache(document, file.cache)
    if file.rules is None:
        if file.routes or file.aliases or len(file.upstreams) > 1:
            raise PolicyFileError(f"{document.locate(('routes',))}: routes and several upstreams need `rules`")
        name, upstream = next(iter(sections.upstreams.items())) if file.upstreams else ("openai", default_upstream)
        deployment = Deployment(
            routes={name: RouteSettings(upstream=name)},
            retry=file.retry,
            circuit_breaker=file.circuit_breaker,
            cache=file.cache,
            prices=sections.prices,
        )
        return {name: upstream}, deployment
    if not file.routes:
        raise PolicyFileError(f"{document.locate(('rules',))}: rules need `routes` to send requests to")
    try:
        policy = load_policy(file.rules, list(file.routes), locate=lambda where: document.locate(where))
    except PolicyError as exc:
        raise PolicyFileError(str(exc)) from exc
    return sections.upstreams, Deployment(
        **_knowledge(document, file, sections, policy),
        routes=sections.routes,
        aliases=file.aliases,
        prices=sections.prices,
        baseline=file.baseline,
        model_selects_route=file.model_selects_route,
        retry=file.retry,
        circuit_breaker=file.circuit_breaker,
        cache=file.cache,
        policy=policy,
    )
