"""The semantic cache (opt-in per rule): a paraphrase hits; a negation, a changed number, another tenant do not."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from proxy.config.settings import load_settings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process
from tests.integration.test_cache import ask, body, cache_block

POLICY = """
upstreams:
  sim: {{base_url: "${{SIM_URL}}", api_key: sk-semantic-test-key-0123456789}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
cache: {cache}
rules:
  - name: support
    when: {{metadata: {{team: support}}}}
    route: gpt4
    cache: {{semantic: {{threshold: 0.95}}}}
  - name: default
    route: gpt4
"""


@pytest.fixture(params=["memory", "redis"])
async def semantic(
    request: pytest.FixtureRequest, simulator: SimulatorServer, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY.format(cache=cache_block(request.param, redis_url, redis_prefix))))
    async with in_process(load_settings({"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path)})) as http:
        yield http


def support(text: str, **extra: object) -> dict[str, object]:
    return body(text, metadata={"team": "support"}, **extra)


async def status(http: httpx.AsyncClient, payload: dict[str, object], **headers: str) -> str:
    response = await ask(http, payload, **headers)
    assert response.status_code == 200
    return response.headers["x-turnout-cache"]


async def test_a_paraphrase_hits_and_a_contradiction_does_not(semantic: httpx.AsyncClient) -> None:
    tenant = {"x-turnout-caller": f"t-{uuid.uuid4().hex}"}  # a tenant of this test's own on the shared Redis
    first = await ask(semantic, support("How do I reset my password?"), **tenant)
    assert first.headers["x-turnout-cache"] == "miss"
    # The same question again waits for the first's flight, which lands once its answer and question are stored.
    assert await status(semantic, support("How do I reset my password?"), **tenant) == "hit"
    paraphrase = await ask(semantic, support("How can I reset my password?"), **tenant)
    assert paraphrase.headers["x-turnout-cache"] == "hit"
    assert paraphrase.content == first.content
    # Embeddings 0.97 alike, but a negation: never the other's answer.
    assert await status(semantic, support("How do I not reset my password?"), **tenant) == "miss"
    assert await status(semantic, support("Give me 3 tips to reset my password."), **tenant) == "miss"
    assert await status(semantic, support("Give me 5 tips to reset my password."), **tenant) == "miss"
    assert await status(semantic, support("What is the refund policy?"), **tenant) == "miss"


async def test_semantic_hits_stay_within_a_tenant_and_parameters(semantic: httpx.AsyncClient) -> None:
    tenant = {"x-turnout-caller": f"t-{uuid.uuid4().hex}"}
    assert await status(semantic, support("How do I reset my password?"), **tenant) == "miss"
    other = {"x-turnout-caller": f"t-{uuid.uuid4().hex}"}
    assert await status(semantic, support("How can I reset my password?"), **other) == "miss"
    assert await status(semantic, support("How can I reset my password?", max_tokens=5), **tenant) == "miss"
    # A different conversation before the question: not the same request.
    earlier = {"role": "system", "content": "Answer in French."}
    payload = support("How can I reset my password?")
    payload["messages"] = [earlier, *payload["messages"]]  # type: ignore[misc]
    assert await status(semantic, payload, **tenant) == "miss"


async def test_rules_without_semantic_match_exactly(semantic: httpx.AsyncClient) -> None:
    tenant = {"x-turnout-caller": f"t-{uuid.uuid4().hex}"}
    assert await status(semantic, body("How do I reset my password?"), **tenant) == "miss"
    assert await status(semantic, body("How can I reset my password?"), **tenant) == "miss"
