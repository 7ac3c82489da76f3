"""Embeddings bought from an upstream are counted: those a request needs on its tally, those made at load apart."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxy.config.settings import load_settings
from routes.simulator.server import SimulatorServer
from tests.conftest import in_process

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: sk-embedding-cost-0123456789}
embedder: {upstream: sim, model: text-embedding-3-small, dimension: 64}
routes:
  support-ft: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  gpt4: {upstream: sim, model: gpt-4}
baseline: gpt4
rules:
  - name: passwords
    when: {similar_to: {examples: ["How do I reset my password?"], threshold: 0.5}}
    route: support-ft
  - name: default
    route: gpt4
"""


def embedded_tokens(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "turnout_embedding_tokens_total" and sample.labels["model"] == "text-embedding-3-small"
    )


async def test_a_requests_embedding_is_on_its_bill_and_in_the_metrics(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    settings = load_settings({"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(path)})
    async with in_process(settings) as http:
        at_load = embedded_tokens((await http.get("/metrics")).text)
        assert at_load > 0  # the rule's example, embedded once when the policy was loaded
        question = {"model": "gpt-4", "messages": [{"role": "user", "content": "how do i reset my password"}]}
        response = await http.post("/v1/chat/completions", json=question)
        assert response.status_code == 200
        assert response.headers["x-turnout-rule"] == "passwords"
        after = embedded_tokens((await http.get("/metrics")).text)
        again = await http.post("/v1/chat/completions", json=question)
        assert again.headers["x-turnout-rule"] == "passwords"
        remembered = embedded_tokens((await http.get("/metrics")).text)
    assert after > at_load  # the question, embedded to decide
    assert remembered == after  # the same question again: its vector is remembered, not bought twice
    usage = response.json()["usage"]
    chat = Decimal("0.012") * usage["prompt_tokens"] / 1000 + Decimal("0.016") * usage["completion_tokens"] / 1000
    assert Decimal(response.headers["x-turnout-cost-usd"]) > chat  # the embedding is on the request's bill
