import numpy as np
import pytest

from routes.knowledge.embedding import (
    Embedded,
    EmbedderMismatchError,
    LocalEmbedder,
    RememberingEmbedder,
    Spent,
    check_compatible,
)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


async def test_rows_are_unit_vectors_in_order(embedder: LocalEmbedder) -> None:
    texts = ["How do I reset my password?", "What is the refund policy?", ""]
    vectors, spent = await embedder.embed(texts)
    assert spent is None  # the local model bills nothing
    assert vectors.shape == (3, 256)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, rtol=1e-5)
    assert not vectors[2].any()  # an empty text stays zero instead of dividing by zero
    alone = (await embedder.embed([texts[1]])).vectors
    np.testing.assert_allclose(alone[0], vectors[1], rtol=1e-5, atol=1e-6)


async def test_paraphrases_are_closer_than_unrelated_texts(embedder: LocalEmbedder) -> None:
    base, paraphrase, unrelated = (
        await embedder.embed(
            ["How do I reset my password?", "I forgot my password, how can I change it?", "Weather in Paris tomorrow"]
        )
    ).vectors
    assert float(base @ paraphrase) > 0.5 > float(base @ unrelated)


async def test_large_batches_give_the_same_vectors(embedder: LocalEmbedder) -> None:
    texts = [f"question number {i} about invoices" for i in range(100)]  # over the inline batch size
    np.testing.assert_allclose((await embedder.embed(texts)).vectors, embedder.embed_sync(texts), rtol=1e-6)
    assert (await embedder.embed([])).vectors.shape == (0, 256)


def test_a_prefix_of_the_dimensions_is_a_smaller_model() -> None:
    assert LocalEmbedder(dimension=64).dimension == 64
    with pytest.raises(ValueError, match="64, 128 or 256"):
        LocalEmbedder(dimension=300)


def test_vectors_of_another_embedder_are_refused(embedder: LocalEmbedder) -> None:
    check_compatible("wordllama/l2_supercat", 256, embedder)
    with pytest.raises(EmbedderMismatchError, match="text-embedding-3-small"):
        check_compatible("text-embedding-3-small", 1536, embedder)


class CountingEmbedder:
    """Embeds each text as a one-hot-ish unit vector of its length, and records every batch."""

    name = "counting"
    dimension = 4

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def embed(self, texts):
        self.batches.append(list(texts))
        rows = np.zeros((len(texts), 4), dtype=np.float32)
        for index, text in enumerate(texts):
            rows[index, len(text) % 4] = 1.0
        return Embedded(rows, Spent("counting", sum(map(len, texts))))


async def test_a_remembering_embedder_embeds_each_text_once_and_keeps_the_order() -> None:
    inner = CountingEmbedder()
    embedder = RememberingEmbedder(inner, size=2)
    assert (embedder.name, embedder.dimension) == ("counting", 4)
    first, spent = await embedder.embed(["a", "bb", "a"])
    assert inner.batches == [["a", "bb"]]  # one batch, a duplicate embedded once
    assert spent == Spent("counting", 3)  # and billed once
    np.testing.assert_array_equal(first[0], first[2])
    again, spent = await embedder.embed(["bb", "a"])
    assert inner.batches == [["a", "bb"]]  # both remembered
    assert spent is None  # nothing embedded, nothing billed
    np.testing.assert_array_equal(again, first[[1, 0]])
    await embedder.embed(["ccc"])  # "bb" was used longest ago of the two: it goes
    await embedder.embed(["a"])
    await embedder.embed(["bb"])
    assert inner.batches[-2:] == [["ccc"], ["bb"]]
    many = (await embedder.embed([str(i) * (i + 1) for i in range(10)])).vectors  # more than it keeps, in one batch
    assert many.shape == (10, 4)
    assert [int(np.argmax(row)) for row in many] == [(i + 1) % 4 for i in range(10)]
