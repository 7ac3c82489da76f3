"""What the app's resources own across reloads: the local embedding model."""

from __future__ import annotations

from pathlib import Path

from proxy.config.settings import load_settings
from proxy.lifespan import Resources, open_resources
from routes.knowledge.embedding import Embedder
from routes.simulator.server import SimulatorServer
from tests.integration.test_rag_reload import reload_now

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}"}
routes:
  ft: {upstream: sim, model: ft}
  gpt4: {upstream: sim, model: gpt-4}
rules:
  - name: passwords
    when: {similar_to: {examples: ["How do I reset my password?"], threshold: 0.5}}
    route: ft
    cache: {semantic: {threshold: 0.95}}
  - name: default
    route: gpt4
"""


def scorer_embedder(resources: Resources) -> Embedder:
    scorer = resources.current.knowledge.scorer
    assert scorer is not None
    return scorer.embedder


async def test_the_local_model_belongs_to_the_resources_and_outlives_reloads(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy)}
    async with open_resources(load_settings(env), reload_settings=lambda: load_settings(env)) as resources:
        first = scorer_embedder(resources)
        await reload_now()
        assert resources.reloads == 1
        assert scorer_embedder(resources) is first  # loaded once, shared by every generation
    async with open_resources(load_settings(env)) as others:
        assert scorer_embedder(others) is not first  # no process-wide model: each app's resources have their own
