"""`fuse`: lexical and dense scores into one ranking, by each fusion and weight."""

from __future__ import annotations

import numpy as np
import pytest

from routes.knowledge.retrieval import WEIGHTS, fuse

# Five chunks: lexical favours 0 then 1, dense favours 4 then 3; chunk 2 is second-best on both.
LEXICAL = np.array([9.0, 6.0, 5.0, 0.0, 0.0], dtype=np.float32)
DENSE = np.array([0.1, 0.2, 0.6, 0.7, 0.8], dtype=np.float32)


def test_the_single_lists_rank_by_their_own_score() -> None:
    assert fuse(LEXICAL, DENSE, "lexical")[0].tolist()[:3] == [0, 1, 2]
    assert fuse(LEXICAL, DENSE, "dense")[0].tolist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("fusion", ["convex", "rrf"])
def test_the_weight_moves_the_ranking_from_one_list_to_the_other(fusion: str) -> None:
    all_lexical = fuse(LEXICAL, DENSE, fusion, weight=1.0)[0].tolist()  # type: ignore[arg-type]
    all_dense = fuse(LEXICAL, DENSE, fusion, weight=0.0)[0].tolist()  # type: ignore[arg-type]
    assert all_lexical[:3] == [0, 1, 2]
    assert all_dense[:3] == [4, 3, 2]
    balanced = fuse(LEXICAL, DENSE, fusion, weight=0.5)  # type: ignore[arg-type]
    assert sorted(balanced[0].tolist()) == [0, 1, 2, 3, 4]  # every chunk of either list, once
    assert balanced[1].tolist() == sorted(balanced[1].tolist(), reverse=True)


def test_zscore_mixes_standard_scores_over_every_chunk() -> None:
    order, fused = fuse(LEXICAL, DENSE, "zscore", weight=0.5)
    standard = 0.5 * (LEXICAL - LEXICAL.mean()) / LEXICAL.std() + 0.5 * (DENSE - DENSE.mean()) / DENSE.std()
    assert order.tolist() == np.argsort(-standard).tolist()
    np.testing.assert_allclose(fused, standard[order], rtol=1e-5)
    assert order[0] == 2  # second-best on both lists beats the best of either
    flat = fuse(np.zeros(5, dtype=np.float32), DENSE, "zscore", weight=0.5)[0]  # no lexical hit: dense alone
    assert flat.tolist() == [4, 3, 2, 1, 0]


def test_the_default_weights_are_the_fusions_own() -> None:
    assert fuse(LEXICAL, DENSE, "rrf")[1].tolist() == fuse(LEXICAL, DENSE, "rrf", weight=WEIGHTS["rrf"])[1].tolist()
    assert fuse(LEXICAL, DENSE)[0].tolist() == fuse(LEXICAL, DENSE, "zscore", weight=WEIGHTS["zscore"])[0].tolist()


def test_a_chunk_without_a_query_term_is_no_lexical_candidate() -> None:
    order, _ = fuse(np.zeros(5, dtype=np.float32), DENSE, "rrf", weight=0.9, candidates=2)
    assert order.tolist() == [4, 3]
