"""Lexical search: the tokenizer every chunk and query share, and BM25 over an in-memory inverted index.

BM25 (Okapi, k1 = 1.2, b = 0.75) scores a chunk by the query terms it contains, weighted by their
rarity in the index and damped by the chunk's length. Each term's contribution to each chunk it appears
in depends only on that chunk, so it is computed once when the index is loaded: a query then adds up a
few precomputed arrays (one per query term) into a score per chunk, which is a handful of NumPy
operations however large the index.

Terms are lower-cased word characters with English stop words dropped and a plural `s` removed
("refunds" finds "refund"); numbers and codes ("e1234") stay whole.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["LexicalIndex", "term_counts", "terms"]

K1 = 1.2
B = 0.75
_WORD = re.compile(r"\w+")
_STOP_WORDS = (
    "a an and are as at be but by can do does for from had has have how i if in into is it its me my no not of "
    "on or our so than that the their them then there these they this to was we were what when where which who "
    "why will with you your"
)
_STOP = frozenset(_STOP_WORDS.split())


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The lexical terms of `text`, in order (repeats kept)."""
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in _STOP]


def term_counts(text: str) -> dict[str, int]:
    """How often each term occurs in `text` (what the index stores per chunk)."""
    return dict(Counter(terms(text)))


class LexicalIndex:
    """BM25 over chunks given as term counts; `scores(query)` is one float per chunk."""

    __slots__ = ("_postings", "size")

    def __init__(self, chunks: Sequence[Mapping[str, int]]) -> None:
        self.size = len(chunks)
        lengths = np.array([sum(counts.values()) for counts in chunks], dtype=np.float32)
        average = float(lengths.mean()) if self.size and lengths.mean() > 0 else 1.0
        by_term: dict[str, tuple[list[int], list[int]]] = {}
        for number, counts in enumerate(chunks):
            for term, count in counts.items():
                docs, tfs = by_term.setdefault(term, ([], []))
                docs.append(number)
                tfs.append(count)
        norms = K1 * (1 - B + B * lengths / average)
        self._postings: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = {}
        for term, (docs, tfs) in by_term.items():
            ids = np.array(docs, dtype=np.int64)
            tf = np.array(tfs, dtype=np.float32)
            idf = math.log(1 + (self.size - len(docs) + 0.5) / (len(docs) + 0.5))
            self._postings[term] = ids, (idf * tf * (K1 + 1) / (tf + norms[ids])).astype(np.float32)

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """The BM25 score of every chunk for `query` (0 where it shares no term)."""
        scores = np.zeros(self.size, dtype=np.float32)
        for term in set(terms(query)):
            posting = self._postings.get(term)
            if posting is not None:
                scores[posting[0]] += posting[1]  # a term lists each chunk once, so no index repeats
        return scores
