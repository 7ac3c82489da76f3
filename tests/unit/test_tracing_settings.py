"""Where traces go: the `tracing` block and the standard `OTEL_*` variables (`proxy.config.tracing`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.errors import ConfigError
from proxy.config.settings import load_settings
from proxy.config.tracing import TracingFile, tracing_settings


def test_off_by_default() -> None:
    assert tracing_settings(TracingFile(), {}).traces_url is None
    assert load_settings({}).tracing.traces_url is None


def test_the_files_endpoint_gets_the_traces_path() -> None:
    settings = tracing_settings(TracingFile(endpoint="http://collector:4318/", service_name="gw", sample_ratio=0.5), {})
    assert (settings.traces_url, settings.service_name, settings.sample_ratio) == (
        "http://collector:4318/v1/traces",
        "gw",
        0.5,
    )


def test_the_environment_wins_over_the_file() -> None:
    file = TracingFile(endpoint="http://file:4318")
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318", "OTEL_SERVICE_NAME": "svc"}
    assert tracing_settings(file, base).traces_url == "http://env:4318/v1/traces"
    assert tracing_settings(file, base).service_name == "svc"
    full = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom"}
    assert tracing_settings(file, full).traces_url == "http://traces:9999/custom"


def test_otlp_alone_means_the_default_endpoint_and_none_turns_it_off() -> None:
    assert (
        tracing_settings(TracingFile(), {"OTEL_TRACES_EXPORTER": "otlp"}).traces_url
        == "http://localhost:4318/v1/traces"
    )
    off = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}
    assert tracing_settings(TracingFile(endpoint="http://file:4318"), off).traces_url is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "otlp or none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "no http:// or https:// URL"),
    ],
)
def test_what_turnout_cannot_export_to_is_a_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tracing_settings(TracingFile(), env)


def test_the_policy_files_block_is_read_and_checked(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tracing: {endpoint: 'http://c:4318', sample_ratio: 0.25}\n", encoding="utf-8")
    settings = load_settings({"TURNOUT_CONFIG": str(policy)})
    assert settings.tracing.traces_url == "http://c:4318/v1/traces"
    assert settings.tracing.sample_ratio == 0.25
    policy.write_text("tracing: {endpoint: 'http://c:4318', sampling: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="tracing"):
        load_settings({"TURNOUT_CONFIG": str(policy)})


def test_a_password_in_the_endpoint_is_redacted_like_any_secret() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:hunter2secret@collector:4318"}
    assert "hunter2secret" in load_settings(env).secrets()
