"""`proxy.config.settings.load_settings`: defaults, the environment, the YAML config file, and secrets kept secret.

Every test passes an explicit environment; none reads or changes `os.environ`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.errors import ConfigError
from proxy.config.sections import DEFAULT_BASE_URL, ServerSettings, TimeoutSettings
from proxy.config.settings import Secret, Settings, UpstreamSettings, load_settings

KEY = "sk-test-0123456789abcdefSECRET"
FILE_KEY = "sk-file-9876543210fedcbaSECRET"


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "turnout.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


ONE_UPSTREAM = """\
server:
  host: 0.0.0.0
  port: 9100
  workers: 2
  drain_timeout: 5
upstreams:
  azure:
    base_url: https://example.test/openai/v1
    api_key: ${AZURE_KEY}
    timeout:
      connect: 3
      read: 30
    max_connections: 20
"""


# --- defaults and the OpenAI variables -----------------------------------------------------------------


def test_defaults_without_any_environment_are_simulated():
    settings = load_settings({})
    assert settings == Settings(
        server=ServerSettings(),
        upstreams={"openai": UpstreamSettings()},
        simulated=True,
        config_path=None,
    )
    assert settings.server == ServerSettings(
        host="127.0.0.1", port=8000, workers=1, max_body_bytes=16 * 1024 * 1024, drain_timeout=30.0, log_level="info"
    )
    server = settings.server
    assert (server.max_connections, server.max_header_bytes) == (10_000, 65_536)
    assert (server.idle_timeout, server.header_timeout, server.body_timeout) == (75.0, 10.0, 30.0)
    assert settings.upstream.name == "openai"
    assert settings.upstream.base_url == DEFAULT_BASE_URL == "https://api.openai.com/v1"
    assert settings.upstream.api_key is None
    assert settings.upstream.timeout == TimeoutSettings(connect=10.0, read=120.0, total=600.0)
    assert settings.upstream.max_connections == 1000


def test_openai_api_key_means_a_real_upstream():
    settings = load_settings({"OPENAI_API_KEY": KEY})
    assert settings.simulated is False
    assert settings.upstream.base_url == DEFAULT_BASE_URL
    assert settings.upstream.api_key is not None
    assert settings.upstream.api_key.reveal() == KEY


def test_openai_base_url_alone_means_a_real_upstream():
    settings = load_settings({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert settings.simulated is False
    assert settings.upstream.base_url == "http://127.0.0.1:11434/v1"
    assert settings.upstream.api_key is None


def test_empty_openai_variables_count_as_unset():
    settings = load_settings({"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    assert settings.simulated is True
    assert settings.upstream.api_key is None
    assert settings.upstream.base_url == DEFAULT_BASE_URL


def test_base_url_must_be_http():
    with pytest.raises(ConfigError, match="base_url"):
        load_settings({"OPENAI_BASE_URL": "ftp://example.test"})


# --- TURNOUT_* overrides ------------------------------------------------------------------------------


def test_turnout_variables_override_the_defaults():
    settings = load_settings(
        {
            "TURNOUT_HOST": "0.0.0.0",
            "TURNOUT_PORT": "9000",
            "TURNOUT_WORKERS": "4",
            "TURNOUT_MAX_BODY_BYTES": "1024",
            "TURNOUT_DRAIN_TIMEOUT": "2.5",
            "TURNOUT_SHUTDOWN_LINGER": "0.5",
            "TURNOUT_LOG_LEVEL": "debug",
            "TURNOUT_UPSTREAM_CONNECT_TIMEOUT": "1.5",
            "TURNOUT_UPSTREAM_READ_TIMEOUT": "7",
            "TURNOUT_UPSTREAM_TIMEOUT": "60",
            "TURNOUT_UPSTREAM_MAX_CONNECTIONS": "50",
            "TURNOUT_MAX_CONNECTIONS": "300",
            "TURNOUT_MAX_HEADER_BYTES": "8192",
            "TURNOUT_IDLE_TIMEOUT": "4",
            "TURNOUT_HEADER_TIMEOUT": "2.5",
            "TURNOUT_BODY_TIMEOUT": "12",
        }
    )
    assert settings.server == ServerSettings(
        host="0.0.0.0",
        port=9000,
        workers=4,
        max_body_bytes=1024,
        drain_timeout=2.5,
        shutdown_linger=0.5,
        log_level="debug",
        max_connections=300,
        max_header_bytes=8192,
        idle_timeout=4.0,
        header_timeout=2.5,
        body_timeout=12.0,
    )
    assert settings.upstream.timeout == TimeoutSettings(connect=1.5, read=7.0, total=60.0)
    assert settings.upstream.max_connections == 50
    assert settings.simulated is True


NUMERIC_VARIABLES = [
    "TURNOUT_PORT",
    "TURNOUT_WORKERS",
    "TURNOUT_MAX_BODY_BYTES",
    "TURNOUT_DRAIN_TIMEOUT",
    "TURNOUT_SHUTDOWN_LINGER",
    "TURNOUT_UPSTREAM_CONNECT_TIMEOUT",
    "TURNOUT_UPSTREAM_READ_TIMEOUT",
    "TURNOUT_UPSTREAM_TIMEOUT",
    "TURNOUT_UPSTREAM_MAX_CONNECTIONS",
    "TURNOUT_MAX_CONNECTIONS",
    "TURNOUT_MAX_HEADER_BYTES",
    "TURNOUT_IDLE_TIMEOUT",
    "TURNOUT_HEADER_TIMEOUT",
    "TURNOUT_BODY_TIMEOUT",
]


@pytest.mark.parametrize("variable", NUMERIC_VARIABLES)
def test_a_non_number_is_an_error_naming_the_variable(variable):
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: "abc"})


@pytest.mark.parametrize("variable", NUMERIC_VARIABLES)
def test_a_negative_value_is_an_error_naming_the_variable(variable):
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: "-1"})


@pytest.mark.parametrize(
    "variable",
    [
        "TURNOUT_WORKERS",
        "TURNOUT_MAX_BODY_BYTES",
        "TURNOUT_UPSTREAM_TIMEOUT",
        "TURNOUT_MAX_CONNECTIONS",
        "TURNOUT_IDLE_TIMEOUT",
        "TURNOUT_HEADER_TIMEOUT",
        "TURNOUT_BODY_TIMEOUT",
    ],
)
def test_zero_is_an_error_where_it_makes_no_sense(variable):
    with pytest.raises(ConfigError):
        load_settings({variable: "0"})


def test_zero_port_and_zero_drain_are_allowed():
    settings = load_settings({"TURNOUT_PORT": "0", "TURNOUT_DRAIN_TIMEOUT": "0", "TURNOUT_SHUTDOWN_LINGER": "0"})
    assert settings.server.port == 0
    assert settings.server.drain_timeout == 0.0
    assert settings.server.shutdown_linger == 0.0


def test_a_header_limit_below_a_kilobyte_is_an_error():
    with pytest.raises(ConfigError, match="TURNOUT_MAX_HEADER_BYTES"):
        load_settings({"TURNOUT_MAX_HEADER_BYTES": "100"})


def test_the_connection_limits_come_from_the_server_section(tmp_path):
    limits = (
        "server: {max_connections: 64, max_header_bytes: 4096, idle_timeout: 9, header_timeout: 3, body_timeout: 7}"
    )
    settings = load_settings({"TURNOUT_CONFIG": write_config(tmp_path, limits)})
    assert settings.server == ServerSettings(
        max_connections=64, max_header_bytes=4096, idle_timeout=9.0, header_timeout=3.0, body_timeout=7.0
    )


def test_port_out_of_range_is_an_error():
    with pytest.raises(ConfigError, match="port"):
        load_settings({"TURNOUT_PORT": "70000"})


def test_unknown_log_level_is_an_error():
    with pytest.raises(ConfigError, match="'loud'"):
        load_settings({"TURNOUT_LOG_LEVEL": "loud"})


# --- the config file ----------------------------------------------------------------------------------


def test_config_file_with_one_upstream_and_an_env_reference(tmp_path):
    path = write_config(tmp_path, ONE_UPSTREAM)
    settings = load_settings({"TURNOUT_CONFIG": path, "AZURE_KEY": FILE_KEY})
    assert settings.config_path == path
    assert settings.simulated is False
    assert settings.server == ServerSettings(host="0.0.0.0", port=9100, workers=2, drain_timeout=5.0)
    assert settings.upstream == UpstreamSettings(
        name="azure",
        base_url="https://example.test/openai/v1",
        api_key=Secret(FILE_KEY),
        timeout=TimeoutSettings(connect=3.0, read=30.0, total=600.0),
        max_connections=20,
    )
    assert settings.upstream.api_key is not None
    assert settings.upstream.api_key.reveal() == FILE_KEY


def test_env_reference_inside_a_longer_string(tmp_path):
    path = write_config(tmp_path, "upstreams:\n  local:\n    base_url: http://${HOST}:8080/v1\n")
    settings = load_settings({"TURNOUT_CONFIG": path, "HOST": "10.0.0.7"})
    assert settings.upstream.base_url == "http://10.0.0.7:8080/v1"


def test_the_file_upstream_wins_over_the_openai_variables(tmp_path):
    path = write_config(tmp_path, ONE_UPSTREAM)
    settings = load_settings(
        {"TURNOUT_CONFIG": path, "AZURE_KEY": FILE_KEY, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://other/v1"}
    )
    assert settings.upstream.base_url == "https://example.test/openai/v1"
    assert settings.upstream.api_key == Secret(FILE_KEY)


def test_a_missing_variable_names_the_key_path(tmp_path):
    path = write_config(tmp_path, ONE_UPSTREAM)
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"TURNOUT_CONFIG": path})
    message = str(excinfo.value)
    assert "upstreams.azure.api_key" in message
    assert "AZURE_KEY" in message
    assert path in message


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("server:\n  port: 9100\n  colour: blue\n", "colour"),
        ("servers: {}\n", "servers"),
        ("upstreams:\n  a:\n    base_url: https://a.test/v1\n    apikey: x\n", "apikey"),
        ("upstreams:\n  a:\n    timeout:\n      conect: 3\n", "conect"),
    ],
)
def test_an_unknown_key_is_an_error(tmp_path, text, unknown):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"TURNOUT_CONFIG": path})
    assert unknown in str(excinfo.value)
    assert path in str(excinfo.value)


def test_two_upstreams_are_an_error(tmp_path):
    path = write_config(tmp_path, "upstreams:\n  a:\n    base_url: https://a.test/v1\n  b: {}\n")
    with pytest.raises(ConfigError, match="several upstreams need `rules`"):
        load_settings({"TURNOUT_CONFIG": path})


def test_invalid_yaml_is_an_error(tmp_path):
    path = write_config(tmp_path, "server: [unclosed\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"TURNOUT_CONFIG": path})
    assert str(excinfo.value).startswith(f"{path}:2: not valid YAML")


def test_a_yaml_list_is_an_error(tmp_path):
    path = write_config(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_settings({"TURNOUT_CONFIG": path})


def test_a_wrong_type_in_the_file_is_an_error(tmp_path):
    path = write_config(tmp_path, "server:\n  port: lots\n")
    with pytest.raises(ConfigError, match="port"):
        load_settings({"TURNOUT_CONFIG": path})


def test_a_missing_file_is_an_error(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"TURNOUT_CONFIG": path})
    assert str(excinfo.value) == f"{path}: cannot read the file (No such file or directory)"


def test_env_overrides_the_file_server_and_upstream_values(tmp_path):
    path = write_config(tmp_path, ONE_UPSTREAM)
    settings = load_settings(
        {
            "TURNOUT_CONFIG": path,
            "AZURE_KEY": FILE_KEY,
            "TURNOUT_PORT": "9200",
            "TURNOUT_WORKERS": "8",
            "TURNOUT_UPSTREAM_CONNECT_TIMEOUT": "4",
            "TURNOUT_UPSTREAM_MAX_CONNECTIONS": "7",
        }
    )
    assert settings.server == ServerSettings(host="0.0.0.0", port=9200, workers=8, drain_timeout=5.0)
    assert settings.upstream.timeout == TimeoutSettings(connect=4.0, read=30.0, total=600.0)
    assert settings.upstream.max_connections == 7


# --- secrets ------------------------------------------------------------------------------------------


def test_repr_of_settings_never_contains_the_key(tmp_path):
    from_env = load_settings({"OPENAI_API_KEY": KEY})
    from_file = load_settings({"TURNOUT_CONFIG": write_config(tmp_path, ONE_UPSTREAM), "AZURE_KEY": FILE_KEY})
    for settings in (from_env, from_file):
        assert "SECRET" not in repr(settings)
        assert "SECRET" not in str(settings)
        assert "Secret('**********')" in repr(settings)


def test_secret_str_and_repr_hide_the_value():
    secret = Secret(KEY)
    assert str(secret) == "Secret('**********')"
    assert repr(secret) == "Secret('**********')"
    assert f"{secret}" == "Secret('**********')"
    assert KEY not in f"{secret!r} {secret!s} {[secret]}"
    assert secret.reveal() == KEY


def test_secret_equality():
    assert Secret(KEY) == Secret(KEY)
    assert Secret(KEY) != Secret(FILE_KEY)
    assert Secret(KEY) != KEY
    assert hash(Secret(KEY)) == hash(Secret(KEY))


def test_an_unquoted_variable_in_a_flow_mapping_says_how_to_quote_it(tmp_path):
    # DESIGN.md's sketch writes `{base_url: ..., api_key: ${OPENAI_API_KEY}}`, which YAML cannot parse.
    path = write_config(tmp_path, "upstreams:\n  openai: {base_url: https://a.test/v1, api_key: ${KEY}}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"TURNOUT_CONFIG": path, "KEY": "sk-x"})
    assert str(excinfo.value).startswith(f"{path}:2: not valid YAML")
    assert 'quote a ${VAR} value: "${VAR}"' in str(excinfo.value)
    quoted = write_config(tmp_path, 'upstreams:\n  openai: {base_url: https://a.test/v1, api_key: "${KEY}"}\n')
    assert load_settings({"TURNOUT_CONFIG": quoted, "KEY": "sk-x"}).upstreams["openai"].api_key is not None


def test_secrets_lists_every_key_and_password_the_settings_hold(tmp_path):
    path = write_config(
        tmp_path,
        "upstreams:\n"
        "  a: {base_url: 'https://llm.internal/v1', api_key: '${A_KEY}'}\n"
        "  b: {base_url: 'https://me:basic-auth-secret@other.internal/v1', api_key: 'b-key-of-no-format'}\n"
        "routes: {x: {upstream: a}, y: {upstream: b}}\n"
        "cache: {url: 'redis://cache.internal:6379/0?password=redis%2Fsecret'}\n"
        "rules: [{name: d, route: x}]\n",
    )
    settings = load_settings({"TURNOUT_CONFIG": path, "A_KEY": "abc123XYZ-secret-a"})
    secrets = settings.secrets()
    assert {"abc123XYZ-secret-a", "b-key-of-no-format", "basic-auth-secret", "redis/secret"} <= set(secrets)
    assert "redis%2Fsecret" in secrets  # as written too
    assert load_settings({}).secrets() == ()


def test_a_base_url_with_a_query_or_fragment_is_an_error():
    for url in ("https://x.test/v1?api-version=1", "https://x.test/v1#top"):
        with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
            load_settings({"OPENAI_BASE_URL": url})
