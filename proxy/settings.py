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
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml

__all__ = ["ENV_VARS", "Secret", "ServerSettings", "Settings", "SettingsError", "UpstreamSettings", "load_settings"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

ENV_VARS: Mapping[str, str] = {
    "TURNOUT_CONFIG": "path of the config file",
    "TURNOUT_HOST": "address to listen on (default 127.0.0.1)",
    "TURNOUT_PORT": "port to listen on (default 8000)",
    "TURNOUT_WORKERS": "worker processes (default 1)",
    "TURNOUT_MAX_BODY_BYTES": "largest request body accepted, in bytes (default 16777216); larger → 413",
    "TURNOUT_DRAIN_TIMEOUT": "seconds in-flight requests get to finish on SIGTERM (default 30)",
    "TURNOUT_LOG_LEVEL": "debug, info, warning or error (default info)",
    "TURNOUT_UPSTREAM_CONNECT_TIMEOUT": "seconds to connect to the upstream (default 10)",
    "TURNOUT_UPSTREAM_READ_TIMEOUT": "seconds between two reads from the upstream (default 120)",
    "TURNOUT_UPSTREAM_TIMEOUT": "seconds for a whole upstream request, streams included (default 600)",
    "TURNOUT_UPSTREAM_MAX_CONNECTIONS": "connections kept open to the upstream (default 1000)",
}


class SettingsError(Exception):
    """The configuration is invalid; the message says where and why."""


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


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How Turnout's own HTTP server runs."""

    host: str = "127.0.0.1"
    port: Port = 8000
    workers: AtLeastOne = 1
    max_body_bytes: AtLeastOne = 16 * 1024 * 1024
    drain_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    log_level: LogLevel = "info"


class TimeoutSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Upstream timeouts in seconds."""

    connect: Seconds = 10.0
    read: Seconds = 120.0
    total: Seconds = 600.0


class UpstreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The OpenAI-compatible upstream requests are sent to."""

    name: str = "openai"
    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = None
    timeout: TimeoutSettings = TimeoutSettings()
    max_connections: int = 1000


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything Turnout is configured with, validated once at startup."""

    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    simulated: bool = False
    """True when no config file, key or base URL was given: answer from the built-in simulated upstream."""
    config_path: str | None = None


class _FileUpstream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An upstream as the config file (or `OPENAI_*` variables) describe it, before its key is wrapped."""

    base_url: Annotated[str, msgspec.Meta(pattern="^https?://")] = DEFAULT_BASE_URL
    api_key: str | None = None
    timeout: TimeoutSettings = TimeoutSettings()
    max_connections: AtLeastOne = 1000


class _ConfigFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings = ServerSettings()
    upstreams: dict[str, _FileUpstream] = {}


_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def _explain(exc: msgspec.ValidationError) -> tuple[str, str]:
    """The path a msgspec validation error names, and what it says is wrong there."""
    message = str(exc)
    match = _AT_PATH.search(message)
    return (match.group(1) if match else ""), _AT_PATH.sub("", message)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, environ: Mapping[str, str], where: str) -> Any:
    """Replace `${VAR}` in every string of a loaded YAML document; a missing variable is an error."""
    if isinstance(value, dict):
        return {key: _expand(item, environ, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise SettingsError(f"{where}: environment variable {name} is not set")
            return environ[name]

        return _ENV_REF.sub(substitute, value)
    return value


def _read_config(path: str, environ: Mapping[str, str]) -> _ConfigFile:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    try:
        config = msgspec.convert(_expand(document, environ, ""), _ConfigFile)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    except msgspec.ValidationError as exc:
        where, what = _explain(exc)
        raise SettingsError(f"{path}: {where + ': ' if where else ''}{what}") from exc
    if len(config.upstreams) > 1:
        raise SettingsError(f"{path}: name exactly one upstream (routing between several comes with policy files)")
    return config


_SERVER_ENV = {
    "TURNOUT_HOST": "host",
    "TURNOUT_PORT": "port",
    "TURNOUT_WORKERS": "workers",
    "TURNOUT_MAX_BODY_BYTES": "max_body_bytes",
    "TURNOUT_DRAIN_TIMEOUT": "drain_timeout",
    "TURNOUT_LOG_LEVEL": "log_level",
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
        field, what = _explain(exc)
        variable = next((var for var, name in names.items() if name == field), ", ".join(names))
        raise SettingsError(f"{variable}={environ.get(variable, '')!r} ({field}): {what}") from exc


def _env_upstream(env: Mapping[str, str]) -> _FileUpstream:
    try:
        return msgspec.convert(
            {"base_url": env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL, "api_key": env.get("OPENAI_API_KEY") or None},
            _FileUpstream,
        )
    except msgspec.ValidationError as exc:
        raise SettingsError(f"OPENAI_BASE_URL must start with http:// or https://: {exc}") from exc


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment (by default `os.environ`) and the config file it names.

    Raises:
        SettingsError: a value is missing or invalid; the message names the variable or file key.
    """
    env = os.environ if environ is None else environ
    config_path = env.get("TURNOUT_CONFIG") or None
    config = _read_config(config_path, env) if config_path else _ConfigFile()
    name, upstream = next(iter(config.upstreams.items())) if config.upstreams else ("openai", _env_upstream(env))
    upstream = _overridden(upstream, _UPSTREAM_ENV, env)
    return Settings(
        server=_overridden(config.server, _SERVER_ENV, env),
        upstream=UpstreamSettings(
            name=name,
            base_url=upstream.base_url,
            api_key=Secret(upstream.api_key) if upstream.api_key else None,
            timeout=_overridden(upstream.timeout, _TIMEOUT_ENV, env),
            max_connections=upstream.max_connections,
        ),
        simulated=not config.upstreams and upstream.api_key is None and not env.get("OPENAI_BASE_URL"),
        config_path=config_path,
    )
