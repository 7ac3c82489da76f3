"""The semantic evaluator's threshold: same-intent utterance pairs must tie, different-intent pairs must not.

`python -m tests.bench.parity_similarity [--datasets DIR] [--pairs N]` builds three sets of pairs from HWU64
(`shared/datasets/hwu64`, see its SOURCE.md): two utterances of the same intent (paraphrases: should be a
tie), of two intents of the same scenario (`alarm_set` against `alarm_remove`: near misses, must not be),
and of two scenarios. It embeds them with the embedded `LocalEmbedder` and prints, for each threshold, the
share of each set at or above it, on the train split (where the threshold is chosen: the lowest with at
most `--max-false` of the near misses above it) and on the test split (held out, to check it). Never part of
the test suite's pass/fail: it prints figures.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from routes.knowledge.embedding import LocalEmbedder

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
THRESHOLDS = [round(0.5 + step / 100, 2) for step in range(50)]
Utterances = dict[str, dict[str, list[str]]]


def utterances(path: Path, split: str) -> Utterances:
    """scenario → intent → utterances of one split."""
    found: Utterances = defaultdict(lambda: defaultdict(list))
    with path.open(encoding="utf-8", newline="") as rows:
        for row in csv.DictReader(rows):
            if row["split"] == split and row["text"].strip():
                found[row["scenario"]][row["intent"]].append(row["text"])
    return found


def pairs(data: Utterances, count: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """`count` pairs of each kind: same intent, same scenario but another intent, another scenario."""
    pick = random.Random(seed)
    intents = [(scenario, intent) for scenario in sorted(data) for intent in sorted(data[scenario])]
    found: dict[str, list[tuple[str, str]]] = {"same intent": [], "same scenario": [], "other scenario": []}
    while min(len(kind) for kind in found.values()) < count:
        scenario, intent = pick.choice(intents)
        texts = data[scenario][intent]
        if len(texts) > 1 and len(found["same intent"]) < count:
            found["same intent"].append(tuple(pick.sample(texts, 2)))  # type: ignore[arg-type]
        siblings = [other for other in sorted(data[scenario]) if other != intent]
        if siblings and len(found["same scenario"]) < count:
            found["same scenario"].append((pick.choice(texts), pick.choice(data[scenario][pick.choice(siblings)])))
        other_scenario, other_intent = pick.choice(intents)
        if other_scenario != scenario and len(found["other scenario"]) < count:
            found["other scenario"].append((pick.choice(texts), pick.choice(data[other_scenario][other_intent])))
    return found


def cosines(embedder: LocalEmbedder, kinds: dict[str, list[tuple[str, str]]]) -> dict[str, np.ndarray]:
    """Each pair's cosine, per kind."""
    result = {}
    for kind, found in kinds.items():
        left = embedder.embed_sync([a for a, _ in found])
        right = embedder.embed_sync([b for _, b in found])
        result[kind] = np.einsum("ij,ij->i", left, right)
    return result


def table(split: str, values: dict[str, np.ndarray]) -> None:
    """The share of each kind at or above each threshold (every fifth, and the chosen region)."""
    print(f"\n{split}: share of pairs at or above the threshold")
    print("threshold  " + "  ".join(f"{kind:>14}" for kind in values))
    for threshold in THRESHOLDS:
        if round(threshold * 100) % 5 == 0 or threshold >= 0.85:
            print(
                f"{threshold:9.2f}  " + "  ".join(f"{(found >= threshold).mean():14.3f}" for found in values.values())
            )


def main() -> None:
    """Choose the threshold on the train split, check it on the test split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--max-false", type=float, default=0.01, help="near misses allowed above the threshold")
    args = parser.parse_args()
    path = args.datasets / "hwu64" / "utterances.csv"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: this bench needs ../shared/datasets beside the repository")
    embedder = LocalEmbedder()
    train = cosines(embedder, pairs(utterances(path, "train"), args.pairs, seed=17))
    test = cosines(embedder, pairs(utterances(path, "test"), args.pairs, seed=18))
    for split, values in (("train", train), ("test", test)):
        quartiles = {
            kind: np.percentile(found, [5, 25, 50, 75, 95]).round(3).tolist() for kind, found in values.items()
        }
        print(f"{split}: cosine percentiles 5/25/50/75/95: {quartiles}")
        table(split, values)
    chosen = next(t for t in THRESHOLDS if (train["same scenario"] >= t).mean() <= args.max_false)
    print(f"\nchosen on train (near misses above it <= {args.max_false}): {chosen}")
    for split, values in (("train", train), ("test", test)):
        shares = ", ".join(f"{kind} {(found >= chosen).mean():.3f}" for kind, found in values.items())
        print(f"  {split}: {shares}")


if __name__ == "__main__":
    main()
