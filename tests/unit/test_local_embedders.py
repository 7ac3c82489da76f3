"""The local models: which one a policy file's `embedder` names, at which dimension, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.errors import ConfigError
from proxy.config.settings import load_embedder_settings
from proxy.semantic import LocalEmbedders
from routes.knowledge.embedding import DEFAULT_LOCAL_MODEL, LOCAL_MODELS, LocalEmbedder, local_identity
from routes.knowledge.minilm import MiniLMEmbedder


def test_each_local_model_resolves_to_its_name_and_dimension() -> None:
    assert local_identity() == (DEFAULT_LOCAL_MODEL, LOCAL_MODELS[DEFAULT_LOCAL_MODEL][0])
    assert local_identity("wordllama/l2_supercat", 64) == ("wordllama/l2_supercat", 64)
    assert local_identity("minilm/all-MiniLM-L6-v2") == ("minilm/all-MiniLM-L6-v2", 384)
    with pytest.raises(ValueError, match="has 384 dimensions, not 256"):
        local_identity("minilm/all-MiniLM-L6-v2", 256)
    with pytest.raises(ValueError, match="no local model 'text-embedding-3-small'"):
        local_identity("text-embedding-3-small")


@pytest.mark.parametrize(
    ("text", "identity"),
    [
        ("", (DEFAULT_LOCAL_MODEL, 256)),
        ("embedder: {dimension: 64}\n", ("wordllama/l2_supercat", 64)),
        ("embedder: {model: minilm/all-MiniLM-L6-v2}\n", ("minilm/all-MiniLM-L6-v2", 384)),
    ],
)
def test_the_file_names_the_local_model_and_the_server_loads_that_one(
    tmp_path: Path, text: str, identity: tuple[str, int]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text + "routes: {a: {upstream: o, model: m}}\nupstreams: {o: {base_url: 'http://127.0.0.1:9'}}\n")
    settings, upstream = load_embedder_settings(str(path), {})
    assert upstream is None
    embedder = LocalEmbedders().get(settings.model, settings.dimension)
    assert (embedder.name, embedder.dimension) == identity
    assert isinstance(embedder.embedder, MiniLMEmbedder if identity[1] == 384 else LocalEmbedder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("embedder: {model: text-embedding-3-small}\n", "no local model 'text-embedding-3-small'"),
        ("embedder: {model: minilm/all-MiniLM-L6-v2, dimension: 256}\n", "has 384 dimensions, not 256"),
    ],
)
def test_a_local_model_that_does_not_exist_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_embedder_settings(str(path), {})


def test_the_same_model_is_loaded_once(tmp_path: Path) -> None:
    local = LocalEmbedders()
    assert local.get() is local.get(DEFAULT_LOCAL_MODEL, 256)
    assert local.get(dimension=64) is not local.get()
