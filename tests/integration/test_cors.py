"""Browser clients (`server.cors`): an allowed origin's preflight answered, its answers readable; others untouched."""

from __future__ import annotations

import msgspec
import pytest

from proxy.config.errors import ConfigError
from proxy.config.sections import CorsSettings
from proxy.config.settings import Settings, load_settings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process, make_settings

APP = "https://app.example.com"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
PREFLIGHT = {"access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type"}


def with_cors(simulator: SimulatorServer, cors: CorsSettings) -> Settings:
    settings = make_settings(simulator.base_url)
    return msgspec.structs.replace(settings, server=msgspec.structs.replace(settings.server, cors=cors))


async def test_off_by_default_no_cors_header_and_no_preflight(simulator: SimulatorServer) -> None:
    async with in_process(make_settings(simulator.base_url)) as http:
        answer = await http.post("/v1/chat/completions", json=BODY, headers={"origin": APP})
        preflight = await http.options("/v1/chat/completions", headers={"origin": APP, **PREFLIGHT})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    assert preflight.status_code == 404  # the upstream's answer (an OPTIONS is passed through): the browser refuses
    assert "access-control-allow-origin" not in preflight.headers


async def test_an_allowed_origin_is_answered_its_preflight_and_may_read_the_answer(simulator: SimulatorServer) -> None:
    async with in_process(with_cors(simulator, CorsSettings(origins=(APP,)))) as http:
        preflight = await http.options("/v1/chat/completions", headers={"origin": APP, **PREFLIGHT})
        answer = await http.post("/v1/chat/completions", json=BODY, headers={"origin": APP})
        other = await http.post("/v1/chat/completions", json=BODY, headers={"origin": "https://evil.example"})
        plain = await http.post("/v1/chat/completions", json=BODY)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert preflight.headers["access-control-max-age"] == "600"
    assert preflight.headers["x-request-id"]  # a request like any other for the logs
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert "x-turnout-route" in answer.headers["access-control-expose-headers"]
    assert "origin" in answer.headers["vary"]
    for untouched in (other, plain):  # another origin, or no browser at all: as without CORS
        assert untouched.status_code == 200
        assert "access-control-allow-origin" not in untouched.headers


async def test_a_preflight_for_a_header_not_allowed_does_not_allow_it(simulator: SimulatorServer) -> None:
    async with in_process(with_cors(simulator, CorsSettings(origins=("*",), headers=("content-type",)))) as http:
        asked = {"origin": APP, "access-control-request-method": "POST", "access-control-request-headers": "x-secret"}
        refused = await http.options("/v1/chat/completions", headers=asked)
        sdk = {**asked, "access-control-request-headers": "content-type, x-stainless-os"}
        allowed = await http.options("/v1/chat/completions", headers=sdk)
    assert refused.headers["access-control-allow-headers"] == "content-type"  # x-secret not among them
    assert allowed.headers["access-control-allow-headers"] == "content-type, x-stainless-os"


def test_the_policy_file_sets_it_and_refuses_what_is_not_an_origin(tmp_path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("server: {cors: {origins: ['https://app.example.com:8443'], max_age: 60}}\n", encoding="utf-8")
    cors = load_settings({"TURNOUT_CONFIG": str(path)}).server.cors
    assert cors == CorsSettings(origins=("https://app.example.com:8443",), max_age=60)
    path.write_text("server: {cors: {origins: ['app.example.com/path']}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"policy.yaml:1: server.cors.origins.0: Expected `str` matching"):
        load_settings({"TURNOUT_CONFIG": str(path)})
