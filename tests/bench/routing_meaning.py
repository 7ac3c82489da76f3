"""Routing by meaning on HWU64: first-match `similar_to` rules against one `nearest` rule.

`python -m tests.bench.routing_meaning [--embedder SPEC] [--folds 3]`

HWU64 (`../shared/datasets/hwu64/utterances.csv`) has 18 scenarios. Each fold shuffles them (a seeded
shuffle), holds 4 out as unknown traffic and makes the other 14 routes, each with 10 example utterances
drawn from the train split. Every test-split utterance (1,076: the known scenarios' and the held-out
ones') is then decided by three policies through the shipped engine and scorer (`load_policy`,
`SemanticScorer`, `PolicyEngine.decide`), each ending in a default rule to the route `none`:

- `first-match @0.6`: one `similar_to` rule per route, at the README's example threshold 0.6, in the
  fold's order (the order is what first-match depends on);
- `first-match @best`: the same rules at the one threshold that scores best (known accuracy plus
  unknown catch rate) on 1,500 train-split utterances that are not examples, so it is fitted there,
  not on the test split;
- `closest example @best`: the same threshold, but the route of the closest example wins, whatever the
  order (a `nearest` rule with k 1, margin 0 and that threshold for every route): what rule order costs;
- `nearest (defaults)`: one `nearest` rule over the 14 routes, at the shipped defaults (k, margin and
  calibration; thresholds calibrated leave-one-out from the examples).

Printed per policy, as means over the folds: accuracy on known traffic (the right route), the unknown
catch rate (unknown traffic that reached the default), misroutes (known traffic sent to a wrong route),
and accuracy over everything (a known utterance routed right or an unknown one caught).

`--embedder` names the embedder: `local` (the default: the local model, as a policy file without
`embedder:` gets it, `--dimension` 256), or `module:callable`, a factory called with no arguments that
returns an `Embedder`. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from policies import PolicyEngine, SemanticFeatures, load_policy
from proxy.endpoints.chat import CHAT
from proxy.semantic import LocalEmbedders, SemanticScorer
from routes import Call
from routes.knowledge.embedding import Embedder, Question

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "hwu64" / "utterances.csv"
UNKNOWN = 4
EXAMPLES = 10
FIT_QUERIES = 1500
README_THRESHOLD = 0.6
THRESHOLDS = [round(0.2 + 0.05 * step, 2) for step in range(15)]  # 0.2 .. 0.9


@dataclass(frozen=True)
class Utterance:
    text: str
    scenario: str


@dataclass
class Score:
    known_right: int = 0
    known: int = 0
    caught: int = 0
    unknown: int = 0
    misrouted: int = 0

    def add(self, expected: str | None, got: str) -> None:
        if expected is None:
            self.unknown += 1
            self.caught += got == "none"
        else:
            self.known += 1
            self.known_right += got == expected
            self.misrouted += got not in ("none", expected)

    @property
    def figures(self) -> tuple[float, float, float, float]:
        overall = (self.known_right + self.caught) / (self.known + self.unknown)
        return self.known_right / self.known, self.caught / self.unknown, self.misrouted / self.known, overall


def locate(path: Sequence[str | int]) -> str:
    return "bench"


def first_match(order: Sequence[str], examples: dict[str, list[str]], threshold: float) -> PolicyEngine:
    rules: list[dict[str, Any]] = [
        {"name": s, "when": {"similar_to": {"examples": examples[s], "threshold": threshold}}, "route": s}
        for s in order
    ]
    rules.append({"name": "default", "route": "none"})
    return load_policy(rules, [*order, "none"], locate=locate)


def nearest(order: Sequence[str], examples: dict[str, list[str]], threshold: float | None = None) -> PolicyEngine:
    """The shipped defaults; with `threshold`: the best match by its closest example, every route at `threshold`."""
    if threshold is None:
        block: dict[str, Any] = {"routes": {s: examples[s] for s in order}}
    else:
        routes = {s: {"examples": examples[s], "threshold": threshold} for s in order}
        block = {"routes": routes, "k": 1, "margin": 0}
    rules = [
        {"name": "intents", "nearest": block},
        {"name": "default", "route": "none"},
    ]
    return load_policy(rules, [*order, "none"], locate=locate)


def build_embedder(spec: str, dimension: int) -> Embedder:
    if spec == "local":
        return LocalEmbedders().get(None, dimension)
    module, _, name = spec.partition(":")
    factory = getattr(importlib.import_module(module), name)
    embedder: Embedder = factory()
    return embedder


async def features_of(scorer: SemanticScorer, utterances: Sequence[Utterance]) -> list[Any]:
    """Each utterance's request features with every policy's meaning-based features attached."""
    await scorer.prepare()
    out = []
    for utterance in utterances:
        raw = msgspec.json.encode({"model": "bench", "messages": [{"role": "user", "content": utterance.text}]})
        call = Call(endpoint=CHAT, body=CHAT.decode(raw), headers={})
        semantic: SemanticFeatures = await scorer.features(Question(utterance.text))
        out.append(CHAT.features(call).with_semantic(semantic))
    return out


def score(policy: PolicyEngine, features: Sequence[Any], utterances: Sequence[Utterance], known: set[str]) -> Score:
    result = Score()
    for feature, utterance in zip(features, utterances, strict=True):
        expected = utterance.scenario if utterance.scenario in known else None
        result.add(expected, policy.decide(feature).route)
    return result


async def fold(seed: int, rows: list[dict[str, str]], embedder: Embedder) -> dict[str, Score]:
    rng = random.Random(seed)
    scenarios = sorted({row["scenario"] for row in rows})
    rng.shuffle(scenarios)
    known_order = scenarios[UNKNOWN:]
    known = set(known_order)
    train = {s: [r["text"] for r in rows if r["split"] == "train" and r["scenario"] == s] for s in scenarios}
    examples = {s: rng.sample(train[s], EXAMPLES) for s in known_order}
    chosen = {text for texts in examples.values() for text in texts}
    fit_pool = [Utterance(r["text"], r["scenario"]) for r in rows if r["split"] == "train" and r["text"] not in chosen]
    fit = rng.sample(fit_pool, FIT_QUERIES)
    test = [Utterance(r["text"], r["scenario"]) for r in rows if r["split"] == "test"]
    sweep = {threshold: first_match(known_order, examples, threshold) for threshold in THRESHOLDS}
    after = nearest(known_order, examples)
    needs = after.semantic_needs | nearest(known_order, examples, 0.5).semantic_needs
    for policy in sweep.values():
        needs = needs | policy.semantic_needs
    scorer = SemanticScorer(needs, embedder, {})
    fit_features = await features_of(scorer, fit)
    fitted = {t: score(p, fit_features, fit, known).figures for t, p in sweep.items()}
    best = max(THRESHOLDS, key=lambda t: fitted[t][0] + fitted[t][1])
    test_features = await features_of(scorer, test)
    return {
        f"first-match @{README_THRESHOLD}": score(
            first_match(known_order, examples, README_THRESHOLD), test_features, test, known
        ),
        f"first-match @best ({best} this fold)": score(sweep[best], test_features, test, known),
        f"closest example @best ({best})": score(nearest(known_order, examples, best), test_features, test, known),
        "nearest (defaults)": score(after, test_features, test, known),
    }


async def run(args: argparse.Namespace) -> None:
    if not DATA.is_file():
        sys.exit(f"no HWU64 at {DATA}: the benchmark needs ../shared/datasets/hwu64")
    with DATA.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    embedder = build_embedder(args.embedder, args.dimension)
    results: dict[str, list[tuple[float, float, float, float]]] = {}
    names: list[str] = []
    for seed in range(args.folds):
        for name, result in (await fold(seed, rows, embedder)).items():
            key = name.split(" (")[0]
            if key not in results:
                names.append(key)
            results.setdefault(key, []).append(result.figures)
            print(f"fold {seed}: {name}: " + " ".join(f"{x:.3f}" for x in result.figures))
    held = f"{args.folds} folds, {UNKNOWN} of 18 scenarios held out"
    print(f"\nembedder: {embedder.name} ({embedder.dimension} dimensions), {held}")
    print("| policy | known accuracy | unknown caught | misroutes | overall accuracy |")
    print("|---|---|---|---|---|")
    for name in names:
        means = [statistics.mean(column) for column in zip(*results[name], strict=True)]
        print(f"| {name} | " + " | ".join(f"{100 * x:.1f}%" for x in means) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="local", help="`local`, or module:factory returning an Embedder")
    parser.add_argument("--dimension", type=int, default=256, help="the local model's dimension (64, 128, 256)")
    parser.add_argument("--folds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
