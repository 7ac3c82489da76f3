"""The semantic cache's false-hit rate: paraphrases that should hit, near-contradictions that must not.

`python -m tests.bench.semantic_cache [--datasets DIR]` builds request pairs from the query sets of two
public BEIR data sets (MS MARCO and DBpedia-Entity, 50 queries each, in `shared/datasets/`; see its
SOURCE.md), embeds them with the embedded `LocalEmbedder`, and prints, for several thresholds:

- the hit rate on paraphrase pairs (the same request worded another way: templates a chat user writes);
- the false-hit rate on near-contradiction pairs (a negation added, a number changed, an antonym
  swapped), with and without the guard of `proxy.cache.semantic` (`agree`);
- the false-hit rate on pairs of two different queries of the same set.

A hit is what `AnswerCache` does: similarity at or above the threshold and, with the guard, the two
questions `agree` (the same numbers and negation, number and contrast words; no word negated by a
prefix in the other). Never part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from proxy.cache.semantic import agree
from routes.knowledge.embedding import LocalEmbedder

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.95, 0.97)

PARAPHRASES: list[tuple[str, str]] = [
    ("{q}", "{q}?"),
    ("Tell me about {q}.", "Can you tell me about {q}?"),
    ("What do you know about {q}?", "Tell me what you know about {q}."),
    ("Explain {q}.", "Please explain {q}."),
    ("I'd like to know about {q}.", "I want to learn about {q}."),
    ("Give me an overview of {q}.", "Can you give me an overview of {q}?"),
    ("{q}", "Information on {q}"),
    ("Search for {q}", "Look up {q}"),
]
NEGATIONS: list[tuple[str, str]] = [
    ("Which documents mention {q}?", "Which documents do not mention {q}?"),
    ("Is {q} important?", "Is {q} not important?"),
    ("Give me examples with {q}.", "Give me examples without {q}."),
    ("Explain {q}.", "Don't explain {q}."),
    ("Does {q} exist?", "Does {q} never exist?"),
]
NUMBERS: list[tuple[str, str]] = [
    ("Give me 3 facts about {q}.", "Give me 5 facts about {q}."),
    ("Summarise {q} in 50 words.", "Summarise {q} in 200 words."),
    ("List two sources on {q}.", "List ten sources on {q}."),
    ("What happened with {q} in 1990?", "What happened with {q} in 2010?"),
]
ANTONYMS: list[tuple[str, str]] = [
    ("What are the advantages of {q}?", "What are the disadvantages of {q}?"),
    ("Why is {q} good?", "Why is {q} bad?"),
    ("What is the best thing about {q}?", "What is the worst thing about {q}?"),
    ("How do I start with {q}?", "How do I stop with {q}?"),
]


def queries(root: Path) -> list[str]:
    found: list[str] = []
    for name in ("msmarco", "dbpedia"):
        with (root / name / "queries.jsonl").open(encoding="utf-8") as lines:
            found.extend(json.loads(line)["text"] for line in lines)
    return found


def pairs(texts: list[str], templates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(a.format(q=q), b.format(q=q)) for q in texts for a, b in templates]


def changed_numbers(texts: list[str]) -> list[tuple[str, str]]:
    """The queries that contain a number, with that number changed."""
    out = []
    for q in texts:
        digits = [word for word in q.split() if word.isdigit()]
        if digits:
            out.append((q, q.replace(digits[0], str(int(digits[0]) + 1), 1)))
    return out


def rate(
    embed: Callable[[list[str]], np.ndarray], pairs_: list[tuple[str, str]], threshold: float, guard: bool
) -> float:
    left = embed([a for a, _ in pairs_])
    right = embed([b for _, b in pairs_])
    similarity = np.sum(left * right, axis=1)
    hits = 0
    for (a, b), sim in zip(pairs_, similarity, strict=True):
        if sim >= threshold and (not guard or agree(a, b)):
            hits += 1
    return hits / len(pairs_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    args = parser.parse_args()
    texts = queries(args.datasets)
    rng = random.Random(5)
    shuffled = texts[:]
    rng.shuffle(shuffled)
    sets = {
        "paraphrase (should hit)": pairs(texts, PARAPHRASES),
        "negation added": pairs(texts, NEGATIONS),
        "number changed": pairs(texts, NUMBERS) + changed_numbers(texts),
        "antonym swapped": pairs(texts, ANTONYMS),
        "two different queries": list(zip(shuffled, shuffled[1:] + shuffled[:1], strict=True)),
    }
    embedder = LocalEmbedder()
    cache: dict[str, np.ndarray] = {}

    def embed(batch: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(batch) if t not in cache]
        if missing:
            cache.update(zip(missing, embedder.embed_sync(missing), strict=True))
        return np.stack([cache[t] for t in batch])

    print(f"{len(texts)} BEIR queries (MS MARCO, DBpedia-Entity); embedder {embedder.name} ({embedder.dimension} d)")
    print(f"{'pair set':<26}{'pairs':>6}  " + "  ".join(f"t={t:.2f} raw/guard" for t in THRESHOLDS))
    for name, items in sets.items():
        cells = []
        for threshold in THRESHOLDS:
            raw, guarded = rate(embed, items, threshold, False), rate(embed, items, threshold, True)
            cells.append(f"{raw:6.1%} / {guarded:6.1%}")
        print(f"{name:<26}{len(items):>6}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
