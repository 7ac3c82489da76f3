"""The semantic cache's parts: the question a request asks, its guard signature, and nearest-match search.

A semantic hit needs more than a close embedding: questions that differ only by a negation or a
number ("Which plans include SSO?" / "Which plans do not include SSO?", "top 3" / "top 5") embed
almost alike and must not share answers. So each cached question carries a signature, the set of
numbers and of negation and contrast words it contains, and its words; a hit needs the same
signature, no word negated by a prefix in the other ("available" / "unavailable"), and a
similarity at or above the rule's threshold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from routes.knowledge.embedding import Vectors

__all__ = ["Candidate", "agree", "best_match", "contradicts", "pack", "signature", "words"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NEGATIONS = frozenset(
    ("not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "without", "except", "unless")
)
_CONTRACTED = frozenset(
    ("cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont", "wouldnt", "shouldnt", "couldnt")
)
"""Contractions written without their apostrophe; with it, any word ending in "n't" reads as "not"."""
_NUMBER_WORDS = frozenset(
    (
        *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
        *(
            "twenty",
            "thirty",
            "hundred",
            "thousand",
            "million",
            "billion",
            "first",
            "second",
            "third",
            "half",
            "double",
        ),
    )
)
_CONTRASTS = frozenset(
    (
        *("more", "less", "most", "least", "fewer", "before", "after", "above", "below", "over", "under", "increase"),
        *("decrease", "max", "min", "maximum", "minimum", "higher", "lower", "largest", "smallest", "best", "worst"),
    )
)


def signature(text: str) -> str:
    """The numbers and the negation, number and contrast words of `text`, sorted: what a hit must share."""
    lowered = text.lower()
    marks = set()
    for word in _WORD.findall(lowered):
        if word.endswith("n't") or word in _CONTRACTED or word == "cannot":
            marks.add("not")
        elif word in _NEGATIONS or word in _NUMBER_WORDS or word in _CONTRASTS:
            marks.add(word)
    numbers = sorted({number.replace(",", "") for number in _NUMBER.findall(lowered)})
    return " ".join([*numbers, "|", *sorted(marks)])


_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "anti")


def words(text: str) -> frozenset[str]:
    """The lower-cased words of `text`."""
    return frozenset(_WORD.findall(text.lower()))


def contradicts(ours: frozenset[str], theirs: frozenset[str]) -> bool:
    """Whether the two questions differ by a word and the same word with a negating prefix.

    "advantages" / "disadvantages", "available" / "unavailable", "legal" / "illegal": contradictions
    no word list can enumerate.
    """
    only_ours, only_theirs = ours - theirs, theirs - ours
    for a in only_ours:
        for b in only_theirs:
            longer, shorter = (a, b) if len(a) > len(b) else (b, a)
            prefix = longer[: len(longer) - len(shorter)]
            if len(shorter) >= 3 and longer.endswith(shorter) and prefix in _NEGATING_PREFIXES:
                return True
    return False


def agree(a: str, b: str) -> bool:
    """Whether two questions may share an answer as far as the guard can tell (same signature, no prefix negation)."""
    return signature(a) == signature(b) and not contradicts(words(a), words(b))


class _Record(msgspec.Struct, array_like=True):
    key: str
    signature: str
    vector: bytes
    words: str = ""


_RECORD = msgspec.msgpack.Decoder(_Record)


def pack(key: str, text: str, vector: Vectors) -> bytes:
    """One cached question as stored in its namespace's list: the entry's key, its signature, its vector."""
    row = np.asarray(vector, dtype=np.float32).reshape(-1)
    record = _Record(key=key, signature=signature(text), vector=row.tobytes(), words=" ".join(sorted(words(text))))
    return msgspec.msgpack.encode(record)


@dataclass(frozen=True, slots=True)
class Candidate:
    """The best cached question for a new one."""

    key: str
    similarity: float


def best_match(text: str, vector: Vectors, records: Sequence[bytes], threshold: float) -> Candidate | None:
    """The most similar cached question that `agree`s with `text`, when at or above `threshold`."""
    wanted, ours = signature(text), words(text)
    row = np.asarray(vector, dtype=np.float32).reshape(-1)
    best: Candidate | None = None
    for blob in records:
        try:
            record = _RECORD.decode(blob)
        except (msgspec.DecodeError, RecursionError):  # not one of ours (a changed Redis): skipping it recursed
            continue
        if record.signature != wanted or len(record.vector) != row.nbytes:
            continue
        similarity = float(np.frombuffer(record.vector, dtype=np.float32) @ row)
        if similarity < threshold or (best is not None and similarity <= best.similarity):
            continue
        if not contradicts(ours, frozenset(record.words.split())):
            best = Candidate(key=record.key, similarity=similarity)
    return best
