"""The policy file's routes read by their `kind` (`routes.registry`), and configuration errors as `file:line`."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from proxy.config.errors import ConfigError, explain
from proxy.config.policyfile import Deployment
from proxy.config.sections import TimeoutSettings
from proxy.config.settings import load_embedder_settings, load_settings
from routes import KnowledgeIndex
from routes.knowledge.embedding import LocalEmbedder
from routes.openai_chat import OpenAIChatSettings
from routes.rag import NO_CONTEXT_ANSWER, NoContext, RagSettings

UPSTREAMS = "upstreams:\n  openai: {base_url: 'http://127.0.0.1:9/v1'}\n"
DEFAULT = "rules:\n  - name: default\n    route: ft\n"


def write(folder: Path, text: str) -> str:
    KnowledgeIndex.empty(folder / "kb", LocalEmbedder.NAME, 256).save()
    path = folder / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(folder: Path, routes: str, rest: str = DEFAULT) -> Deployment:
    return load_settings({"TURNOUT_CONFIG": write(folder, f"{UPSTREAMS}routes:\n{routes}{rest}")}).deployment


def failure(folder: Path, routes: str, rest: str = DEFAULT) -> str:
    with pytest.raises(ConfigError) as caught:
        load(folder, routes, rest)
    return str(caught.value).replace(str(folder), "<dir>")


def test_an_entry_without_kind_is_the_openai_kind_and_may_say_so(tmp_path: Path) -> None:
    implicit = load(tmp_path, "  ft: {upstream: openai, model: ft, timeout: 5}\n")
    explicit = load(tmp_path, "  ft: {kind: openai, upstream: openai, model: ft, timeout: 5}\n")
    assert implicit.routes == explicit.routes == {"ft": OpenAIChatSettings(upstream="openai", model="ft", timeout=5)}


def test_routes_that_answer_with_another_come_after_the_others(tmp_path: Path) -> None:
    routes = "  docs: {kind: rag, index: kb, answer_with: ft}\n  ft: {upstream: openai}\n  gpt4: {upstream: openai}\n"
    deployment = load(tmp_path, routes, f"aliases: {{help: docs}}\n{DEFAULT}")
    assert list(deployment.routes) == ["ft", "gpt4", "docs"]
    assert deployment.routes["docs"] == RagSettings(index="kb", answer_with="ft")
    assert deployment.routes["docs"].no_context == NoContext(answer=NO_CONTEXT_ANSWER)  # the default: no paid call
    other = load(
        tmp_path, "  ft: {upstream: openai}\n  docs: {kind: rag, index: kb, answer_with: ft, no_context: {route: ft}}\n"
    )
    assert other.routes["docs"] == RagSettings(index="kb", answer_with="ft", no_context=NoContext(route="ft"))
    assert list(deployment.model_names()) == ["ft", "gpt4", "docs", "help"]
    assert list(deployment.indexes) == ["docs"]


@pytest.mark.parametrize(
    ("routes", "rest", "message"),
    [
        (
            "  ft: {upstream: openai}\n  x:\n    kind: chat\n    upstream: openai\n",
            DEFAULT,
            "<dir>/policy.yaml:6: routes.x.kind: Invalid value 'chat'",
        ),
        (
            "  ft: {upstream: openai}\n  x: {kind: rag, upstream: openai, index: kb, answer_with: ft}\n",
            DEFAULT,
            "<dir>/policy.yaml:5: routes.x: Object contains unknown field `upstream`",
        ),
        (
            "  ft: {upstream: openai}\n  x:\n    kind: openai\n    upstream: openai\n    timeout: 0\n",
            DEFAULT,
            "<dir>/policy.yaml:8: routes.x.timeout: Expected `float` > 0.0",
        ),
        (  # a RAG route answers with a route that answers itself, never with another RAG route
            "  ft: {upstream: openai}\n  a: {kind: rag, index: kb, answer_with: ft}\n"
            "  b:\n    kind: rag\n    index: kb\n    answer_with: a\n",
            DEFAULT,
            "<dir>/policy.yaml:9: route 'b': answer_with must be a chat route (ft)",
        ),
        (  # no_context takes exactly one action
            "  ft: {upstream: openai}\n  docs:\n    kind: rag\n    index: kb\n    answer_with: ft\n"
            "    no_context: {}\n",
            DEFAULT,
            "<dir>/policy.yaml:9: route 'docs': no_context takes one of `route` or `answer`",
        ),
        (
            "  ft: {upstream: openai}\n  docs:\n    kind: rag\n    index: kb\n    answer_with: ft\n"
            "    no_context: {route: ft, answer: Sorry}\n",
            DEFAULT,
            "<dir>/policy.yaml:9: route 'docs': no_context takes one of `route` or `answer`",
        ),
        (  # ... and its route answers itself
            "  ft: {upstream: openai}\n  docs:\n    kind: rag\n    index: kb\n    answer_with: ft\n"
            "    no_context:\n      route: docs\n",
            DEFAULT,
            "<dir>/policy.yaml:10: route 'docs': no_context's route must be a route that answers itself (ft)",
        ),
        (
            "  ft: {upstream: nowhere}\n",
            DEFAULT,
            "<dir>/policy.yaml:4: route 'ft': unknown upstream 'nowhere' (openai)",
        ),
        (
            "  ft: {upstream: openai}\n  docs:\n    kind: rag\n    index: elsewhere\n    answer_with: ft\n",
            DEFAULT,
            "<dir>/policy.yaml:7: route 'docs': no knowledge index in <dir>/elsewhere "
            "(create it with `turnout index add PATH --index DIR`)",
        ),
        (
            "  ft: {upstream: openai}\n  docs: {kind: rag, index: kb, answer_with: ft}\n",
            f"baseline: docs\n{DEFAULT}",
            "<dir>/policy.yaml:6: baseline 'docs' is a rag route, not a chat route",
        ),
    ],
)
def test_a_route_kind_checks_its_entry_and_names_the_line(tmp_path: Path, routes: str, rest: str, message: str) -> None:
    assert failure(tmp_path, routes, rest) == message


def test_a_server_error_names_its_line_and_section(tmp_path: Path) -> None:
    path = write(tmp_path, "upstreams: {}\nserver:\n  colour: blue\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"TURNOUT_CONFIG": path})
    assert str(caught.value) == f"{path}:2: server: Object contains unknown field `colour`"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("embedder:\n  dimension: wide\n", "policy.yaml:2: embedder.dimension: Expected `int | null`, got `str`"),
        ("embedder: {dimension: 300}\n", "policy.yaml:1: embedder: the local model has 64, 128 or 256 dimensions"),
        ("embedder: {upstream: none, model: m}\n", "policy.yaml:1: embedder: unknown upstream 'none'"),
        (
            "embedder: {upstream: o, model: m}\nupstreams:\n  o: {base_url: 'ftp://x'}\n",
            "policy.yaml:3: upstreams.o.base_url: Expected `str` matching regex",
        ),
    ],
)
def test_the_index_command_reads_the_embedder_with_the_same_messages(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_embedder_settings(path, {})
    assert str(caught.value).startswith(f"{tmp_path}/{message}")


def test_explain_reads_the_path_msgspec_names() -> None:
    class Timeouts(msgspec.Struct):
        timeouts: list[TimeoutSettings]

    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert({"timeouts": [{}, {"connect": -1}]}, Timeouts)
    assert explain(caught.value) == (("timeouts", 1, "connect"), "Expected `float` > 0.0")
    with pytest.raises(msgspec.ValidationError) as whole:
        msgspec.convert([], TimeoutSettings)
    assert explain(whole.value) == ((), "Expected `object`, got `array`")
