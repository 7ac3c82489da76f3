"""The pass-through's routing (the specific handlers win), its API families, and its `passthrough` setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.exceptions import NotFoundException

from proxy.api import HANDLERS
from proxy.config.errors import ConfigError
from proxy.config.settings import load_settings
from proxy.passthrough import FAMILIES, family_of


def handler_of(app: Litestar, method: str, path: str) -> str:
    _, handler, *_ = app.asgi_router.handle_routing(path=path, method=method)
    return str(handler.name or handler.handler_name)


@pytest.fixture
def app() -> Litestar:
    return Litestar(route_handlers=list(HANDLERS))


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v1/chat/completions", "chat"),
        ("POST", "/chat/completions", "chat"),
        ("GET", "/v1/models", "list_models"),
        ("GET", "/v1/models/gpt-4o", "retrieve_model"),
        ("GET", "/v1/models/ft:gpt-4o:acme::x/y", "retrieve_model"),
        ("POST", "/v1/responses", "responses"),
        ("GET", "/v1/responses/resp_1", "stored_response"),
        ("DELETE", "/v1/responses/resp_1", "stored_response"),
        ("GET", "/v1/responses/resp_1/input_items", "stored_response"),
        ("POST", "/v1/responses/resp_1/cancel", "stored_response"),
        ("POST", "/v1/completions", "completions"),
        ("GET", "/healthz", "healthz"),
        ("GET", "/metrics", "metrics"),
        ("POST", "/v1/files", "passthrough"),
        ("GET", "/v1/files/file-1/content", "passthrough"),
        ("DELETE", "/v1/files/file-1", "passthrough"),
        ("POST", "/v1/fine_tuning/jobs/ftjob-1/cancel", "passthrough"),
        ("GET", "/v1/chat/completions/chatcmpl-1/messages", "passthrough"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/v1/moderations", "passthrough"),
        ("GET", "/v1", "passthrough"),
    ],
)
def test_the_handlers_that_name_a_path_win_and_the_rest_of_v1_passes_through(
    app: Litestar, method: str, path: str, name: str
) -> None:
    assert handler_of(app, method, path) == name


def test_outside_v1_nothing_passes_through(app: Litestar) -> None:
    with pytest.raises(NotFoundException):
        handler_of(app, "GET", "/files")
    with pytest.raises(NotFoundException):
        handler_of(app, "GET", "/v2/files")


@pytest.mark.parametrize(
    ("path", "family"),
    [
        (b"/v1/files", "files"),
        (b"/v1/files/file-1/content", "files"),
        (b"/v1/fine_tuning/jobs", "fine_tuning"),
        (b"/v1/vector_stores/vs_1/files", "vector_stores"),
        (b"/v1/organization/admin_api_keys", "organization"),
        (b"/v1/sk-secret-key-in-a-path", "other"),
        (b"/v1/", "other"),
    ],
)
def test_the_family_is_openai_s_or_other(path: bytes, family: str) -> None:
    assert family_of(path) == family


def test_the_families_are_those_of_openai_s_spec() -> None:
    spec = Path(__file__).resolve().parents[2].parent / "shared" / "openai-openapi" / "openapi.yaml"
    if not spec.exists():
        pytest.skip("the shared OpenAI spec is not next to this worktree")
    firsts = set(re.findall(r"(?m)^  /([a-z_]+)", spec.read_text()))
    assert firsts <= FAMILIES


POLICY = """\
upstreams:
  main: {base_url: "https://example.test/v1"}
  files: {base_url: "https://files.example.test/v1"}
routes:
  r: {upstream: main, model: gpt-4o}
rules:
  - name: default
    route: r
passthrough:
  upstream: %s
"""


def config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return {"TURNOUT_CONFIG": str(path)}


def test_the_passthrough_setting_names_an_upstream(tmp_path: Path) -> None:
    assert load_settings(config(tmp_path, POLICY % "files")).deployment.passthrough == "files"
    assert load_settings(config(tmp_path, POLICY.split("passthrough:")[0])).deployment.passthrough is None


def test_an_unknown_passthrough_upstream_is_refused_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy.yaml:10: passthrough: unknown upstream 'nowhere'"):
        load_settings(config(tmp_path, POLICY % "nowhere"))


def test_without_rules_the_passthrough_names_the_one_upstream(tmp_path: Path) -> None:
    text = 'upstreams:\n  only: {base_url: "https://example.test/v1"}\npassthrough: {upstream: %s}\n'
    assert load_settings(config(tmp_path, text % "only")).deployment.passthrough == "only"
    with pytest.raises(ConfigError, match="unknown upstream 'other'"):
        load_settings(config(tmp_path, text % "other"))


def test_no_route_may_take_the_passthrough_s_label(tmp_path: Path) -> None:
    text = POLICY.replace("  r: {", "  passthrough: {").replace("route: r", "route: passthrough") % "files"
    with pytest.raises(ConfigError, match="reserved"):
        load_settings(config(tmp_path, text))
