"""Every `Embedder` passes the same tests: the local model, the remembering wrapper, an OpenAI-compatible upstream.

The OpenAI embedder asks the simulated upstream on a loopback port, whose `/embeddings` hashes words to
directions: not meaning, but deterministic, and texts that share words point the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from routes.knowledge.embedders import OpenAIEmbedder
from routes.knowledge.embedding import LOCAL_MODELS, Embedder, LocalEmbedder, RememberingEmbedder, Spent, Vectors
from routes.knowledge.minilm import MiniLMEmbedder
from routes.simulator.server import SimulatorServer
from routes.upstream import Upstream, UpstreamTimeouts, new_session

TEXTS = ["Refunds are paid back within 30 days.", "Support is open from 8 to 18.", "The Hub ships by courier."]


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    """The local model, loaded once for this module (about 1.5 s)."""
    return LocalEmbedder(256)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    """MiniLM, loaded once for this module (about 1.5 s)."""
    return MiniLMEmbedder()


@pytest.fixture(params=["local", "local-64", "minilm", "remembering", "remembering-small", "openai"])
async def embedder(
    request: pytest.FixtureRequest, local: LocalEmbedder, minilm: MiniLMEmbedder, simulator: SimulatorServer
) -> AsyncIterator[Embedder]:
    if request.param == "local":
        yield local
    elif request.param == "minilm":
        yield minilm
    elif request.param == "local-64":
        yield LocalEmbedder(64)
    elif request.param == "remembering":
        yield RememberingEmbedder(local)
    elif request.param == "remembering-small":
        yield RememberingEmbedder(local, size=2)  # forgets all but the last two texts: both paths every call
    else:
        session = new_session(UpstreamTimeouts())
        yield OpenAIEmbedder(Upstream("sim", simulator.base_url, "sk-test", session), "text-embedding-3-small", 64)
        await session.close()


async def rows(embedder: Embedder, texts: list[str]) -> Vectors:
    return (await embedder.embed(texts)).vectors


async def test_a_call_says_what_it_was_billed(embedder: Embedder) -> None:
    spent = (await embedder.embed(TEXTS[:1])).spent
    if embedder.name in LOCAL_MODELS:
        assert spent is None  # a local model bills nothing
    else:
        assert spent is not None
        assert (spent.model, spent.tokens > 0) == (embedder.name, True)
    if isinstance(embedder, RememberingEmbedder):
        assert (await embedder.embed(TEXTS[:1])).spent is None  # remembered: nothing embedded, nothing billed


async def test_one_unit_row_of_the_dimension_per_text(embedder: Embedder) -> None:
    vectors = await rows(embedder, TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dimension)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


async def test_nothing_to_embed_is_no_rows(embedder: Embedder) -> None:
    assert (await rows(embedder, [])).shape == (0, embedder.dimension)


async def test_a_text_embeds_the_same_alone_in_a_batch_and_again(embedder: Embedder) -> None:
    batch = await rows(embedder, TEXTS)
    for row, text in zip(batch, TEXTS, strict=True):
        np.testing.assert_allclose((await rows(embedder, [text]))[0], row, rtol=1e-5, atol=1e-6)
    repeated = await rows(embedder, [TEXTS[1], TEXTS[0], TEXTS[1]])
    np.testing.assert_allclose(repeated, batch[[1, 0, 1]], rtol=1e-5, atol=1e-6)


async def test_different_texts_point_different_ways_and_shared_words_closer(embedder: Embedder) -> None:
    refunds, hours, refunds_again = await rows(embedder, [TEXTS[0], TEXTS[1], "When are refunds paid back?"])
    assert float(refunds @ hours) < 0.99
    assert float(refunds @ refunds_again) > float(refunds_again @ hours)


async def test_a_large_batch_keeps_its_order(embedder: Embedder) -> None:
    """More texts than any implementation embeds at once (inline, per request): split and joined in order."""
    texts = [f"passage number {number} about topic {number % 7}" for number in range(600)]
    vectors = await rows(embedder, texts)
    assert vectors.shape == (600, embedder.dimension)
    for number in (0, 63, 64, 65, 511, 512, 599):
        np.testing.assert_allclose((await rows(embedder, [texts[number]]))[0], vectors[number], rtol=1e-5, atol=1e-6)


async def test_the_name_and_dimension_say_which_vectors_these_are(embedder: Embedder) -> None:
    assert embedder.name in (LocalEmbedder.NAME, MiniLMEmbedder.NAME, "text-embedding-3-small")
    assert embedder.dimension in (64, 256, 384)
    assert len((await rows(embedder, ["x"]))[0]) == embedder.dimension


# --- what only the OpenAI embedder does -----------------------------------------------------------------------


async def test_the_openai_embedder_asks_the_upstream_and_says_what_each_call_was_billed(
    simulator: SimulatorServer,
) -> None:
    session = new_session(UpstreamTimeouts())
    try:
        upstream = Upstream("sim", simulator.base_url, "sk-test", session)
        embedder = OpenAIEmbedder(upstream, "text-embedding-3-small", 64)
        vectors, first = await embedder.embed(["refunds are paid back", "refunds are paid back", "opening hours"])
        again, second = await embedder.embed(["refunds are paid back"])
    finally:
        await session.close()
    assert vectors.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[0], again[0], rtol=1e-5)  # deterministic
    assert float(vectors[0] @ vectors[2]) < 0.99
    assert (first, second) == (Spent("text-embedding-3-small", 13), Spent("text-embedding-3-small", 5))
    assert (embedder.name, embedder.dimension) == ("text-embedding-3-small", 64)


# --- what only the MiniLM embedder does -----------------------------------------------------------------------


def test_minilm_gives_the_similarities_sentence_transformers_publishes(minilm: MiniLMEmbedder) -> None:
    """The PyTorch model's cosine similarities for these three sentences, as sentence-transformers' README prints them.

    The NumPy network, the tokenizer and the pooling together reproduce them to four places.
    """
    sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    vectors = minilm.embed_sync(sentences)
    published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    np.testing.assert_allclose(vectors @ vectors.T, published, atol=6e-5)


def test_minilm_cuts_a_long_text_at_its_256_tokens(minilm: MiniLMEmbedder) -> None:
    head = " ".join(f"word{number}" for number in range(400))
    np.testing.assert_allclose(minilm.embed_sync([head + " tail"]), minilm.embed_sync([head + " other ending"]))
