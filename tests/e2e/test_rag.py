"""The RAG route through the real `turnout serve`, driven by the official SDK with strict validation.

The knowledge index is built by `turnout index add` with the policy file's embedder: the simulated
upstream's `/v1/embeddings` (so the OpenAI-compatible embedder runs end to end, with no network). The
simulator records what the answering model received: the instruction and the numbered passages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import openai
import pytest

from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_cli,
    turnout_env,
)
from tests.openapi import validate

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
embedder: {upstream: sim, model: text-embedding-3-small, dimension: 256}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt4: {upstream: sim, model: gpt-4}
  docs: {kind: rag, index: ./index, answer_with: support-ft, top_k: 2, context_tokens: 400}
rules:
  - name: documented
    when: {retrieval_score: {route: docs, gte: 0.3}}
    route: docs
  - name: default
    route: gpt4
"""
DOCS = {
    "refunds.md": "# Billing\n\n## Refunds\n\nRefunds of a cancelled order are paid back within 30 days.\n",
    "hub.html": "<h1>Hub</h1><h2>Delivery</h2><p>The Hub is delivered by courier in 3 business days.</p>",
}
QUESTION: list[Any] = [{"role": "user", "content": "How many days until refunds are paid back?"}]


@pytest.fixture(scope="module")
def setup(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = Path(tmp_path_factory.mktemp("rag"))
    (folder / "docs").mkdir()
    for name, text in DOCS.items():
        (folder / "docs" / name).write_text(text, encoding="utf-8")
    policy = folder / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    built = turnout_cli(
        "index", "add", str(folder / "docs"), "--index", str(folder / "index"), "--config", str(policy), env=env
    )
    assert built.returncode == 0, built.stderr
    assert "2 added" in built.stdout
    return policy, env


@pytest.fixture(scope="module")
def rag(setup: tuple[Path, dict[str, str]]) -> Iterator[openai.OpenAI]:
    _, env = setup
    with running(start_turnout(env)) as process:
        client = sdk_client(process.origin)
        yield client
        client.close()


def test_a_question_is_answered_from_the_documents(rag: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    raw = rag.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=QUESTION, extra_headers={"x-request-id": request_id}
    )
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rule"]) == ("docs", "documented")
    assert unquote(raw.headers["x-turnout-sources"]).split(", ")[0] == "docs/refunds.md#Billing > Refunds"
    body = json.loads(raw.http_response.text)
    validate("CreateChatCompletionResponse", body)
    completion = raw.parse()  # strict validation keeps the extra field
    assert completion.model == FT
    assert completion.choices[0].message.content
    sources = (completion.model_extra or {})["turnout_sources"]
    assert sources[0]["source"] == "docs/refunds.md"
    assert sources[0]["heading"] == "Billing > Refunds"
    assert sources[0]["index"] == 1
    sent = simulator_call(request_id)["body"]
    assert sent["model"] == FT
    system, user = sent["messages"]
    assert system["role"] == "system"
    assert "only the numbered passages" in system["content"]
    assert (
        "[1] (docs/refunds.md - Billing > Refunds)\nRefunds of a cancelled order are paid back within 30 days."
        in (system["content"])
    )
    assert user == QUESTION[0]


def test_a_stream_carries_the_sources_too(rag: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    with rag.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=QUESTION, stream=True, extra_headers={"x-request-id": request_id}
    ) as response:
        assert response.headers["x-turnout-route"] == "docs"
        assert "refunds.md" in response.headers["x-turnout-sources"]
        chunks = list(response.parse())
    assert chunks[0].model_extra is not None
    assert chunks[0].model_extra["turnout_sources"][0]["source"] == "docs/refunds.md"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "[1] (docs/refunds.md" in simulator_call(request_id)["body"]["messages"][0]["content"]


async def test_the_async_sdk_streams_through_the_rag_route(rag: openai.OpenAI) -> None:
    client = openai.AsyncOpenAI(
        base_url=str(rag.base_url), api_key="sk-e2e-client", max_retries=0, _strict_response_validation=True
    )
    async with client:
        stream = await client.chat.completions.create(model="docs", messages=QUESTION, stream=True)
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[0].model_extra is not None
    assert "turnout_sources" in chunks[0].model_extra


def test_an_unrelated_question_skips_the_documents(rag: openai.OpenAI) -> None:
    raw = rag.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Compose a limerick about penguins"}]
    )
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rule"]) == ("gpt4", "default")
    assert "x-turnout-sources" not in raw.headers
    assert "turnout_sources" not in (raw.parse().model_extra or {})


def test_serve_refuses_a_policy_whose_index_is_missing(setup: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    policy, env = setup
    broken = tmp_path / "policy.yaml"
    broken.write_text(policy.read_text(encoding="utf-8"), encoding="utf-8")  # ./index is not beside this copy
    result = turnout_cli("serve", "--port", "1", env={**env, "TURNOUT_CONFIG": str(broken)})
    assert result.returncode == 2
    assert "no knowledge index in" in result.stderr
    assert f"{broken}:" in result.stderr


def test_the_index_cannot_be_searched_with_another_embedder(setup: tuple[Path, dict[str, str]]) -> None:
    policy, env = setup
    result = turnout_cli("index", "search", "refunds", "--index", str(policy.parent / "index"), env=env)
    assert result.returncode == 1
    assert "made by text-embedding-3-small (256 dimensions), not by wordllama/l2_supercat" in result.stderr
