"""A RAG route in the whole app: a re-built index is served after a reload (with a new `cache_scope`), and a
reload whose index is gone keeps the running policy."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import pytest

from proxy.config.settings import load_settings
from proxy.lifespan import open_resources
from routes import KnowledgeIndex, RagRoute
from routes.knowledge.embedding import LocalEmbedder
from routes.knowledge.indexer import add_files
from routes.simulator.server import SimulatorServer

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}"}
routes:
  ft: {upstream: sim, model: ft}
  docs: {kind: rag, index: ./index, answer_with: ft}
rules:
  - name: documented
    when: {retrieval_score: {route: docs, gte: 0.4}}
    route: docs
  - name: default
    route: ft
"""


async def build(folder: Path, text: str) -> None:
    (folder / "hours.txt").write_text(text, encoding="utf-8")
    embedder = LocalEmbedder(256)
    index = KnowledgeIndex.empty(folder / "index", embedder.name, embedder.dimension)
    if (folder / "index" / "manifest.json").exists():
        index = KnowledgeIndex.load(folder / "index")
    index, _ = await add_files(index, [folder / "hours.txt"], embedder)
    index.save()


async def reload_now() -> None:
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.05)


async def test_reload_serves_the_rebuilt_index_and_keeps_it_when_the_index_is_gone(
    simulator: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await build(tmp_path, "Support is open from 8 to 18 on weekdays.")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy)}
    async with open_resources(load_settings(env), reload_settings=lambda: load_settings(env)) as resources:
        first = resources.current.pipeline.routes["docs"]
        assert isinstance(first, RagRoute)
        passages = (await first.retriever.search("when is support open", top_k=1)).passages
        assert passages[0].text == "Support is open from 8 to 18 on weekdays."

        await build(tmp_path, "Support is open around the clock, every day.")
        await reload_now()
        assert resources.reloads == 1
        second = resources.current.pipeline.routes["docs"]
        assert isinstance(second, RagRoute)
        assert second.cache_scope != first.cache_scope
        passages = (await second.retriever.search("when is support open", top_k=1)).passages
        assert passages[0].text == "Support is open around the clock, every day."

        shutil.rmtree(tmp_path / "index")
        await reload_now()
        assert resources.reloads == 1
        assert "policy reload failed, keeping the running policy" in caplog.text
        assert "route 'docs': no knowledge index in" in caplog.text
        assert resources.current.pipeline.routes["docs"] is second


async def test_a_new_index_version_is_picked_up_without_a_sighup(simulator: SimulatorServer, tmp_path: Path) -> None:
    await build(tmp_path, "Support is open from 8 to 18 on weekdays.")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {"SIM_URL": simulator.base_url, "TURNOUT_CONFIG": str(policy)}
    settings = load_settings(env)
    async with open_resources(settings, reload_settings=lambda: load_settings(env), watch_interval=0.02) as resources:
        first = resources.current.pipeline.routes["docs"]
        await asyncio.sleep(0.1)  # the watch looks a few times: nothing changed, nothing reloaded
        assert resources.reloads == 0
        await build(tmp_path, "Support is open around the clock, every day.")  # the manifest replaced last
        for _ in range(500):  # until the watch has seen it (a bound, not a timing assertion)
            if resources.reloads:
                break
            await asyncio.sleep(0.02)
        assert resources.reloads == 1
        second = resources.current.pipeline.routes["docs"]
        assert isinstance(first, RagRoute)
        assert isinstance(second, RagRoute)
        assert second.cache_scope != first.cache_scope
        passages = (await second.retriever.search("when is support open", top_k=1)).passages
        assert passages[0].text == "Support is open around the clock, every day."
        await asyncio.sleep(0.1)
        assert resources.reloads == 1  # once per change
