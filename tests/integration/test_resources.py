"""What the app's resources own across reloads: the local embedding model, and the breakers a scrape reads."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
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


def circuits(recorder: Recorder) -> dict[str, float]:
    return {
        sample.labels["route"]: sample.value
        for family in text_string_to_metric_families(recorder.exposition().decode())
        for sample in family.samples
        if sample.name == "turnout_circuit_state"
    }


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


async def test_a_scrape_reads_the_running_policys_breakers(simulator: SimulatorServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy)}
    recorder = Recorder(Metrics())
    assert circuits(recorder) == {}
    settings = load_settings(env)
    async with open_resources(settings, reload_settings=lambda: load_settings(env), recorder=recorder) as resources:
        assert circuits(recorder) == {"ft": 0, "gpt4": 0, "sim": 0}  # `sim`: the default upstream's own route
        policy.write_text(POLICY.replace("  gpt4: {upstream", "  extra: {upstream: sim, model: x}\n  gpt4: {upstream"))
        await reload_now()
        assert resources.reloads == 1
        assert circuits(recorder) == {"ft": 0, "gpt4": 0, "extra": 0, "sim": 0}
