"""CLI: `turnout serve` (the proxy), `turnout simulate` (the simulated OpenAI upstream), policy and index commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import logging
import logging.config
import math
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, cast

from proxy._version import __version__
from proxy.accounting.accesslog import ACCESS_LOGGER
from proxy.cli.export import add_export_command, run_export_command
from proxy.cli.index import add_index_commands, run_index_command
from proxy.cli.keys import add_keys_commands, run_keys_command
from proxy.cli.parity import add_parity_commands, run_parity_command
from proxy.cli.policy import add_policy_commands, run_policy_command
from proxy.cli.prices import add_prices_command, run_prices_command
from proxy.cli.replay import add_replay_command, run_replay_command
from proxy.cli.traffic import add_traffic_commands, run_traffic_command
from proxy.config.errors import ConfigError
from proxy.config.settings import ENV_VARS, Settings, load_settings
from proxy.logs import LOG_FORMAT, RedactingFormatter
from proxy.wire.redaction import Redactor
from proxy.wire.redisurl import redact_url

__all__ = ["main"]

logger = logging.getLogger("turnout")

# `serve` flag → the environment variable it sets (so every worker process sees the same value).
_SERVE_FLAGS = {
    "config": "TURNOUT_CONFIG",
    "host": "TURNOUT_HOST",
    "port": "TURNOUT_PORT",
    "workers": "TURNOUT_WORKERS",
    "max_body_bytes": "TURNOUT_MAX_BODY_BYTES",
    "drain_timeout": "TURNOUT_DRAIN_TIMEOUT",
    "shutdown_linger": "TURNOUT_SHUTDOWN_LINGER",
    "max_connections": "TURNOUT_MAX_CONNECTIONS",
    "max_header_bytes": "TURNOUT_MAX_HEADER_BYTES",
    "idle_timeout": "TURNOUT_IDLE_TIMEOUT",
    "header_timeout": "TURNOUT_HEADER_TIMEOUT",
    "body_timeout": "TURNOUT_BODY_TIMEOUT",
    "log_level": "TURNOUT_LOG_LEVEL",
    "log_content": "TURNOUT_LOG_CONTENT",
    "access_log": "TURNOUT_ACCESS_LOG",
    "upstream_connect_timeout": "TURNOUT_UPSTREAM_CONNECT_TIMEOUT",
    "upstream_read_timeout": "TURNOUT_UPSTREAM_READ_TIMEOUT",
    "upstream_timeout": "TURNOUT_UPSTREAM_TIMEOUT",
}


def _log_config(level: str, redactor: Redactor | None = None) -> dict[str, Any]:
    """One plain format for Turnout's and uvicorn's loggers, applied in every worker.

    `redactor` (the settings' secrets) goes to every worker with the config: their first lines are
    redacted by value already, before each worker's app loads the policy itself.
    """
    handler = {"()": "proxy.logs.stderr_handler", "formatter": "plain"}
    loggers = {
        name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False} for name in ("turnout", "uvicorn")
    }
    # The access log's lines are JSON objects as they are (redacted like every other line).
    access = {**handler, "formatter": "json"}
    loggers[ACCESS_LOGGER] = {"handlers": ["access"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"()": RedactingFormatter, "format": LOG_FORMAT, "redactor": redactor},
            "json": {"()": RedactingFormatter, "format": "%(message)s", "redactor": redactor},
        },
        "handlers": {"stderr": handler, "access": access},
        "loggers": loggers,
        # Other libraries' warnings (asyncio, aiohttp, redis) through the same redacting handler, not `lastResort`.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description="An OpenAI-compatible routing proxy.")
    parser.add_argument("--version", action="version", version=f"turnout {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    epilog = "Environment variables (flags win over them):\n" + "\n".join(f"  {k:34} {v}" for k, v in ENV_VARS.items())
    serve = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Without a config file, OPENAI_API_KEY or OPENAI_BASE_URL it answers from "
        "the built-in simulated upstream.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", metavar="FILE", help="config file (YAML)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--max-body-bytes", type=int, metavar="N", help="largest request body (default 16 MiB)")
    serve.add_argument("--drain-timeout", type=float, metavar="S", help="seconds to finish requests on SIGTERM")
    serve.add_argument("--shutdown-linger", type=float, metavar="S", help="seconds idle connections stay on SIGTERM")
    serve.add_argument("--max-connections", type=int, metavar="N", help="open connections per worker; default 10000")
    serve.add_argument("--max-header-bytes", type=int, metavar="N", help="largest request head (default 64 KiB)")
    serve.add_argument("--idle-timeout", type=float, metavar="S", help="a connection with no request; default 75")
    serve.add_argument("--header-timeout", type=float, metavar="S", help="request line and headers; default 10")
    serve.add_argument("--body-timeout", type=float, metavar="S", help="request body, +1 s per 64 KiB; default 30")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    serve.add_argument(
        "--log-content", action="store_const", const="true", help="put messages and answers in the access log"
    )
    serve.add_argument("--no-access-log", dest="access_log", action="store_const", const="false", help="no access log")
    serve.add_argument("--upstream-connect-timeout", type=float, metavar="S", help="default 10")
    serve.add_argument("--upstream-read-timeout", type=float, metavar="S", help="between reads; default 120")
    serve.add_argument("--upstream-timeout", type=float, metavar="S", help="whole request; default 600")

    add_policy_commands(commands)
    add_index_commands(commands)
    add_keys_commands(commands)
    add_prices_command(commands)
    add_export_command(commands)
    add_replay_command(commands)
    add_traffic_commands(commands)
    add_parity_commands(commands)

    simulate = commands.add_parser("simulate", help="run the simulated OpenAI upstream on its own")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8001)
    simulate.add_argument("--latency-ms", type=float, default=0.0, help="wait before answering")
    simulate.add_argument("--chunk-interval-ms", type=float, default=0.0, help="wait between stream chunks")
    simulate.add_argument("--chunks", type=int, default=12, help="content chunks (words) per answer")
    return parser


def _serve(args: argparse.Namespace) -> int:
    for flag, variable in _SERVE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[variable] = str(value)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"turnout: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    redactor = Redactor(settings.secrets())
    logging.config.dictConfig(_log_config(settings.server.log_level, redactor))
    logger.info(_describe_upstream(settings))
    _describe_auth(settings)
    _raise_open_file_limit(settings)
    server = settings.server
    # uvicorn drains, then raises again the signal it stopped on; a drained SIGTERM is a clean stop (exit 0).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    with contextlib.ExitStack() as stack:
        if server.workers > 1 and not settings.metrics_dir:
            # Every worker writes its metric values under one fresh directory, which /metrics merges.
            metrics_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="turnout-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        _run_uvicorn(settings, redactor)
    return 0


def _run_uvicorn(settings: Settings, redactor: Redactor) -> None:
    import uvicorn

    from proxy.drain import DrainingHttpProtocol
    from proxy.protocol import ConnectionLimits, ServerConnections

    server = settings.server
    limits = ConnectionLimits(
        max_connections=server.max_connections,
        max_header_bytes=server.max_header_bytes,
        idle_timeout=server.idle_timeout,
        header_timeout=server.header_timeout,
        body_timeout=server.body_timeout,
    )
    # A partial, not a class made here: with --workers N, uvicorn pickles its config for each worker.
    shared = ServerConnections()
    protocol = functools.partial(DrainingHttpProtocol, limits=limits, shared=shared, linger=server.shutdown_linger)
    uvicorn.run(
        "proxy.app:create_app",
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        loop="auto",  # uvloop when installed
        http=cast("type[asyncio.Protocol]", protocol),  # httptools' parser, with Turnout's connection limits
        ws="none",  # no websocket endpoint: an upgrade request is answered as a plain one
        timeout_keep_alive=math.ceil(server.idle_timeout),  # a backstop: the protocol closes idle connections
        timeout_graceful_shutdown=math.ceil(server.drain_timeout),
        log_config=_log_config(server.log_level, redactor),
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


def _raise_open_file_limit(settings: Settings) -> None:
    """Raise the soft open-file limit to what `max_connections` needs, within the hard limit (as Go does).

    Each client connection and each pooled upstream connection holds a descriptor; the common soft
    limit of 1024 would fail connections with EMFILE long before the cap. Worker processes inherit it.
    """
    needed = settings.server.max_connections + sum(u.max_connections for u in settings.upstreams.values()) + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        logger.warning(
            "the open-file limit is %d, below the %d that max_connections (%d) and the upstream pools need: "
            "connections past it fail; raise it (ulimit -n) or lower max_connections",
            soft,
            needed,
            settings.server.max_connections,
        )


def _describe_upstream(settings: Settings) -> str:
    if settings.simulated:
        return (
            "No OPENAI_API_KEY set: answering from the built-in simulated upstream (no real model is called). "
            "Set OPENAI_API_KEY to forward to OpenAI."
        )
    upstream = settings.upstream
    key = "with an API key" if upstream.api_key else "without an API key"
    return f"Forwarding to upstream '{upstream.name}' at {redact_url(upstream.base_url)} {key}."


def _describe_auth(settings: Settings) -> None:
    """Say who may call: with keys off on an address other machines reach, loudly."""
    host = settings.server.host
    if settings.deployment.auth.keys:
        logger.info("auth: keys: every request needs a Turnout key (turnout keys create NAME)")
    elif not _loopback(host):
        logger.warning(
            "auth is off and Turnout listens on %s: anyone who can reach it calls through on the upstream's key. "
            "Set `auth: keys` in the policy file (or TURNOUT_AUTH=keys) and create keys with `turnout keys create`.",
            host,
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _simulate(args: argparse.Namespace) -> int:
    from routes.simulator.server import SimulatorConfig, run_simulator

    config = SimulatorConfig(latency_ms=args.latency_ms, chunk_interval_ms=args.chunk_interval_ms, chunks=args.chunks)
    print(f"Simulated OpenAI upstream on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)  # noqa: T201
    run_simulator(config, args.host, args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `turnout` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "index":
            return run_index_command(args)
        if args.command == "keys":
            return run_keys_command(args)
        if args.command == "prices":
            return run_prices_command(args)
        if args.command == "export":
            return run_export_command(args)
        if args.command == "replay":
            return run_replay_command(args)
        if args.command == "feedback":
            return run_traffic_command(args)
        if args.command in ("parity", "canary"):
            return run_parity_command(args)
        return run_policy_command(args)
    except KeyboardInterrupt:
        return 130
