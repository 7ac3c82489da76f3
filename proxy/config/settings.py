"""Settings as frozen msgspec Structs; `load_settings()` reads the environment and the config file once.

Precedence, highest first: `TURNOUT_*` environment variables (the CLI's flags are written there, so
every worker process sees them), the config file (`--config` / `TURNOUT_CONFIG`), then `OPENAI_BASE_URL`
and `OPENAI_API_KEY`, then the defaults. With none of a config file, `OPENAI_API_KEY` and `OPENAI_BASE_URL`,
Turnout answers from its built-in simulated upstream. This is the only module that reads `os.environ`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from proxy.config.errors import ConfigError, explain
from proxy.config.policyfile import Deployment, parse_deployment
from proxy.config.rag import embedder_identity
from proxy.config.sections import (
    DEFAULT_BASE_URL,
    EmbedderSettings,
    ServerSettings,
    TimeoutSettings,
    UpstreamFile,
)
from proxy.config.tracing import TRACING_ENV_VARS, TracingFile, TracingSettings, tracing_settings
from proxy.config.yamlsource import YamlDocument, load_yaml
from proxy.wire.redisurl import url_secrets
from routes.openai_chat import OpenAIChatSettings

__all__ = [
    "ENV_VARS",
    "Secret",
    "Settings",
    "UpstreamSettings",
    "load_embedder_settings",
    "load_settings",
]

ENV_VARS: Mapping[str, str] = {
    "TURNOUT_CONFIG": "path of the config file",
    "TURNOUT_HOST": "address to listen on (default 127.0.0.1)",
    "TURNOUT_PORT": "port to listen on (default 8000)",
    "TURNOUT_WORKERS": "worker processes (default 1)",
    "TURNOUT_MAX_BODY_BYTES": "largest request body accepted, in bytes (default 16777216); larger → 413",
    "TURNOUT_DRAIN_TIMEOUT": "seconds in-flight requests get to finish on SIGTERM (default 30)",
    "TURNOUT_MAX_CONNECTIONS": "client connections open at once, per worker (default 10000); more → 503",
    "TURNOUT_MAX_HEADER_BYTES": "largest request line and headers, in bytes (default 65536); larger → 431",
    "TURNOUT_IDLE_TIMEOUT": "seconds a connection may wait with no request under way (default 75)",
    "TURNOUT_HEADER_TIMEOUT": "seconds for a request's line and headers to arrive (default 10); else 408",
    "TURNOUT_BODY_TIMEOUT": "seconds for a request body to arrive, +1 per 64 KiB (default 30); else 408",
    "TURNOUT_LOG_LEVEL": "debug, info, warning or error (default info)",
    "TURNOUT_UPSTREAM_CONNECT_TIMEOUT": "seconds to connect to the upstream (default 10)",
    "TURNOUT_UPSTREAM_READ_TIMEOUT": "seconds between two reads from the upstream (default 120)",
    "TURNOUT_UPSTREAM_TIMEOUT": "seconds for a whole upstream request, streams included (default 600)",
    "TURNOUT_UPSTREAM_MAX_CONNECTIONS": "connections kept open to the upstream (default 1000)",
    "TURNOUT_ACCESS_LOG": "one JSON line per request on stderr: true or false (default true)",
    "TURNOUT_LOG_CONTENT": "put the messages and the answer in the access log: true or false (default false)",
    "TURNOUT_AUTH": "keys (every request needs a Turnout key) or off (default: the policy file's `auth`, else off)",
    "TURNOUT_DATABASE_URL": "keys and spend: sqlite:///PATH or postgresql://... (default: an SQLite file, see README)",
    "TURNOUT_ADMIN_KEY": "the admin HTTP API's key (/admin/...; without it the admin API is off)",
    "TURNOUT_DATA_DIR": "where the default SQLite file for keys and spend goes (default ~/.local/share/turnout)",
    "PROMETHEUS_MULTIPROC_DIR": "where worker processes keep their metrics (`serve --workers N` sets one)",
    **TRACING_ENV_VARS,
}


class Secret:
    """A credential: its value is only reachable through `reveal()`, never through `repr` or `str`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class UpstreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """An OpenAI-compatible upstream, its key wrapped."""

    name: str = "openai"
    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = None
    timeout: TimeoutSettings = TimeoutSettings()
    max_connections: int = 1000


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything Turnout is configured with, validated once at startup."""

    server: ServerSettings = ServerSettings()
    upstreams: dict[str, UpstreamSettings] = msgspec.field(default_factory=lambda: {"openai": UpstreamSettings()})
    deployment: Deployment = Deployment(routes={"openai": OpenAIChatSettings(upstream="openai")})
    """Routes, aliases, prices, baseline, retry and breaker settings, and the compiled rules."""
    simulated: bool = False
    """True when no config file, key or base URL was given: answer from the built-in simulated upstream."""
    config_path: str | None = None
    metrics_dir: str | None = None
    """Where worker processes keep their metric values (prometheus_client's multiprocess mode); None: one process."""
    admin_key: Secret | None = None
    """The admin HTTP API's key (`TURNOUT_ADMIN_KEY`); None: the admin API is off."""
    tracing: TracingSettings = TracingSettings()
    """Where spans are exported (`proxy.tracing`); off unless an OTLP endpoint is configured."""

    @property
    def upstream(self) -> UpstreamSettings:
        """The first upstream: without rules, the only one."""
        return next(iter(self.upstreams.values()))

    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold, for redaction by value (`proxy.wire.redaction.Redactor`).

        The upstreams' keys and any password in their base URLs, the Redis password of the cache URL
        (in every form it can take there). A new kind of secret in the settings is added here.
        """
        found = [upstream.api_key.reveal() for upstream in self.upstreams.values() if upstream.api_key]
        for upstream in self.upstreams.values():
            found.extend(url_secrets(upstream.base_url))
        found.extend(url_secrets(self.deployment.cache.url))
        found.extend(url_secrets(self.deployment.auth.redis_url))
        found.extend(url_secrets(self.deployment.database_url))
        found.extend(url_secrets(self.deployment.traffic.store))
        found.extend(url_secrets(self.deployment.parity_redis_url))
        if self.admin_key is not None:
            found.append(self.admin_key.reveal())
        found.extend(url_secrets(self.tracing.traces_url))
        return tuple(dict.fromkeys(found))


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, environ: Mapping[str, str], document: YamlDocument, where: tuple[str | int, ...] = ()) -> Any:
    """Replace `${VAR}` in every string of a loaded YAML document; a missing variable is an error."""
    if isinstance(value, dict):
        return {key: _expand(item, environ, document, (*where, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ, document, (*where, i)) for i, item in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                dotted = ".".join(str(key) for key in where)
                raise document.error(where, f"environment variable {name} is not set ({dotted})")
            return environ[name]

        return _ENV_REF.sub(substitute, value)
    return value


def _read_config(path: str, environ: Mapping[str, str]) -> tuple[YamlDocument, dict[str, Any]]:
    document = load_yaml(path)
    data = _expand(document.data, environ, document) if document.data is not None else {}
    if not isinstance(data, dict):
        raise document.error((), "the policy file must be a mapping of sections (upstreams, routes, rules, ...)")
    return document, data


_SERVER_ENV = {
    "TURNOUT_HOST": "host",
    "TURNOUT_PORT": "port",
    "TURNOUT_WORKERS": "workers",
    "TURNOUT_MAX_BODY_BYTES": "max_body_bytes",
    "TURNOUT_DRAIN_TIMEOUT": "drain_timeout",
    "TURNOUT_SHUTDOWN_LINGER": "shutdown_linger",
    "TURNOUT_MAX_CONNECTIONS": "max_connections",
    "TURNOUT_MAX_HEADER_BYTES": "max_header_bytes",
    "TURNOUT_IDLE_TIMEOUT": "idle_timeout",
    "TURNOUT_HEADER_TIMEOUT": "header_timeout",
    "TURNOUT_BODY_TIMEOUT": "body_timeout",
    "TURNOUT_LOG_LEVEL": "log_level",
    "TURNOUT_ACCESS_LOG": "access_log",
    "TURNOUT_LOG_CONTENT": "log_content",
}
_UPSTREAM_ENV = {"TURNOUT_UPSTREAM_MAX_CONNECTIONS": "max_connections"}
_TIMEOUT_ENV = {
    "TURNOUT_UPSTREAM_CONNECT_TIMEOUT": "connect",
    "TURNOUT_UPSTREAM_READ_TIMEOUT": "read",
    "TURNOUT_UPSTREAM_TIMEOUT": "total",
}

StructT = TypeVar("StructT", bound=msgspec.Struct)


def _overridden(struct: StructT, names: Mapping[str, str], environ: Mapping[str, str]) -> StructT:
    """`struct` with the fields whose environment variables are set replaced by their (validated) values."""
    changes = {field: environ[var] for var, field in names.items() if environ.get(var)}
    if not changes:
        return struct
    if "log_level" in changes:
        changes["log_level"] = changes["log_level"].lower()
    try:
        return msgspec.convert({**msgspec.to_builtins(struct), **changes}, type(struct), strict=False)
    except msgspec.ValidationError as exc:
        keys, what = explain(exc)
        field = ".".join(str(key) for key in keys)
        variable = next((var for var, name in names.items() if name == field), ", ".join(names))
        raise ConfigError(f"{variable}={environ.get(variable, '')!r} ({field}): {what}") from exc


def _env_upstream(env: Mapping[str, str]) -> UpstreamFile:
    try:
        return msgspec.convert(
            {"base_url": env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL, "api_key": env.get("OPENAI_API_KEY") or None},
            UpstreamFile,
        )
    except msgspec.ValidationError as exc:
        raise ConfigError(f"OPENAI_BASE_URL must be an http:// or https:// URL without a query: {exc}") from exc


def _upstream(name: str, upstream: UpstreamFile, env: Mapping[str, str]) -> UpstreamSettings:
    """The file's upstream with its key wrapped and the `TURNOUT_UPSTREAM_*` overrides applied."""
    upstream = _overridden(upstream, _UPSTREAM_ENV, env)
    return UpstreamSettings(
        name=name,
        base_url=upstream.base_url,
        api_key=Secret(upstream.api_key) if upstream.api_key else None,
        timeout=_overridden(upstream.timeout, _TIMEOUT_ENV, env),
        max_connections=upstream.max_connections,
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment (by default `os.environ`) and the policy file it names.

    Raises:
        ConfigError: a value is missing or invalid; the message names the variable, or the file and line.
    """
    env = os.environ if environ is None else environ
    config_path = env.get("TURNOUT_CONFIG") or None
    if config_path:
        document, data = _read_config(config_path, env)
    else:
        document, data = YamlDocument(path="<defaults>", data={}, lines={}), {}
    server = document.convert(data.get("server", {}), ServerSettings, ("server",))
    default_upstream = _env_upstream(env)
    upstream_files, deployment = parse_deployment(document, data, default_upstream)
    upstreams = {name: _upstream(name, upstream, env) for name, upstream in upstream_files.items()}
    deployment = _auth_overridden(deployment, env)
    admin_key = env.get("TURNOUT_ADMIN_KEY") or None
    tracing = document.convert(data.get("tracing", {}), TracingFile, ("tracing",))
    return Settings(
        server=_overridden(server, _SERVER_ENV, env),
        upstreams=upstreams,
        deployment=deployment,
        simulated=not config_path and default_upstream.api_key is None and not env.get("OPENAI_BASE_URL"),
        config_path=config_path,
        metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        admin_key=Secret(admin_key) if admin_key else None,
        tracing=tracing_settings(tracing, env),
    )


_DATABASE_URL = re.compile(r"^(sqlite|postgres|postgresql)://")


def _auth_overridden(deployment: Deployment, env: Mapping[str, str]) -> Deployment:
    """`TURNOUT_AUTH` and `TURNOUT_DATABASE_URL` over the policy file's `auth.mode` and `database_url`."""
    mode, database_url = env.get("TURNOUT_AUTH"), env.get("TURNOUT_DATABASE_URL")
    if mode:
        if mode not in ("keys", "off"):
            raise ConfigError(f"TURNOUT_AUTH={mode!r}: keys or off")
        auth = msgspec.structs.replace(deployment.auth, mode=mode)
        deployment = msgspec.structs.replace(deployment, auth=auth)
    if database_url:
        if not _DATABASE_URL.match(database_url):
            raise ConfigError("TURNOUT_DATABASE_URL: sqlite:///PATH, postgres://... or postgresql://...")
        deployment = msgspec.structs.replace(deployment, database_url=database_url)
    return deployment


def load_embedder_settings(
    path: str | None, environ: Mapping[str, str] | None = None
) -> tuple[EmbedderSettings, UpstreamSettings | None]:
    """Only the `embedder` of a policy file and the upstream it names (for `turnout index`, before any index exists).

    Without a file: the local model. Raises:
        ConfigError: the file, its `embedder` or that upstream is invalid.
    """
    env = os.environ if environ is None else environ
    if path is None:
        return EmbedderSettings(), None
    document, data = _read_config(path, env)
    embedder = document.convert(data.get("embedder", {}), EmbedderSettings, ("embedder",))
    embedder_identity(document, embedder)
    if embedder.upstream is None:
        return embedder, None
    upstreams = data.get("upstreams", {})
    if not isinstance(upstreams, dict) or embedder.upstream not in upstreams:
        raise document.error(("embedder", "upstream"), f"embedder: unknown upstream '{embedder.upstream}'")
    where = ("upstreams", embedder.upstream)
    upstream = document.convert(upstreams[embedder.upstream], UpstreamFile, where)
    return embedder, _upstream(embedder.upstream, upstream, env)
