"""Where traces go: the policy file's `tracing` block and the standard `OTEL_*` variables, resolved once.

Tracing is on when an OTLP/HTTP endpoint is named, by the file (`tracing.endpoint`) or by the environment
(`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the full URL; `OTEL_EXPORTER_OTLP_ENDPOINT`, a base URL that gets
`/v1/traces`), or when `OTEL_TRACES_EXPORTER=otlp` asks for the default endpoint; `OTEL_TRACES_EXPORTER=none`
turns it off whatever else says. The environment wins over the file, as the OpenTelemetry SDKs read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from proxy.config.errors import ConfigError

__all__ = ["DEFAULT_OTLP_ENDPOINT", "TRACING_ENV_VARS", "TracingFile", "TracingSettings", "tracing_settings"]

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
"""The OTLP/HTTP port of a collector on the same host (the specification's default)."""
TRACING_ENV_VARS: Mapping[str, str] = {
    "OTEL_TRACES_EXPORTER": "otlp (traces on, to the default endpoint unless one is named) or none (off)",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP/HTTP base URL of the trace receiver (traces go to its /v1/traces)",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "the full OTLP/HTTP URL traces are posted to (over the base URL)",
    "OTEL_SERVICE_NAME": "the traces' service.name (default turnout)",
}


class TracingFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The policy file's `tracing` block."""

    endpoint: str | None = None
    """OTLP/HTTP base URL of the receiver (a collector: `http://otel-collector:4318`); traces go to `/v1/traces`."""
    service_name: str = "turnout"
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    """Share of the traces Turnout starts that are recorded; a client's `traceparent` decides for its own."""


class TracingSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Resolved: where spans are exported (None: tracing is off and costs nothing)."""

    traces_url: str | None = None
    """The full URL spans are posted to (protobuf over HTTP)."""
    service_name: str = "turnout"
    sample_ratio: float = 1.0


def tracing_settings(file: TracingFile, env: Mapping[str, str]) -> TracingSettings:
    """The `tracing` block with the `OTEL_*` variables over it.

    Raises:
        ConfigError: `OTEL_TRACES_EXPORTER` names an exporter Turnout has not (only `otlp` and `none`).
    """
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in ("", "otlp", "none"):
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: otlp or none (Turnout exports OTLP/HTTP only)")
    service = env.get("OTEL_SERVICE_NAME") or file.service_name
    if exporter == "none":
        return TracingSettings(service_name=service, sample_ratio=file.sample_ratio)
    url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
    if url is None:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or file.endpoint
        if base is None and exporter == "otlp":
            base = DEFAULT_OTLP_ENDPOINT
        url = None if base is None else base.rstrip("/") + "/v1/traces"
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"the OTLP traces endpoint {url!r} is no http:// or https:// URL")
    return TracingSettings(traces_url=url, service_name=service, sample_ratio=file.sample_ratio)
