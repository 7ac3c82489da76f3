"""Meaning-based conditions: `similar_to` (example utterances, a threshold) and `retrieval_score` (index confidence).

Both need an embedding model, which a pure, synchronous engine must not call. So the conditions only
declare what they need (`SemanticNeeds`: the example lists, the RAG routes) and read numbers computed
outside the engine (`SemanticFeatures`):

- the proxy embeds every example list once, when the policy is loaded;
- `PolicyEngine.decisions` decides in one pass, testing a rule's conditions that need no meaning first
  (a meaning-based condition's verdict is unknown until then: `Condition.settle`). The first time a
  rule's verdict depends on the meaning, the generator yields what the policy needs; the proxy embeds
  the last user message once, computes every similarity and retrieval score the policy needs from that
  one vector and sends them back, and the engine goes on with that rule.

So a request that an earlier rule settles (tools, a model name, a header) never pays for an embedding,
one that reaches a meaning-based rule pays for exactly one, no rule is tried twice, and the engine stays
pure and synchronous: the same features always give the same decision. `turnout explain` asks for the
features on reaching the first rule with a meaning-based condition and shows each score beside its
threshold.

- `similar_to: {examples: [...], threshold: 0.6}`: the best cosine similarity between the last user
  message and any example is at least `threshold` (-1 to 1).
- `retrieval_score: {route: docs, gt: 0.5}`: the best passage's cosine similarity in the knowledge index
  of the RAG route `docs` (gt, gte, lt, lte); an empty index matches nothing.

A `nearest` rule (`policies.nearest`), which picks among many routes by their examples, reads its scores
the same way, from the same one vector.
"""

from __future__ import annotations

from policies.bounds import bounds, is_number
from policies.checks import Check, Condition, SemanticNeeds
from policies.errors import Path, describe, invalid, require_mapping, unknown
from policies.features import RequestFeatures

__all__ = ["retrieval_score", "similar_to"]

_SIMILAR_KEYS = ("examples", "threshold")


def _unsettled(features: RequestFeatures) -> None:
    """The verdict of a meaning-based condition before the meaning-based features are computed: unknown."""


def _examples(raw: object, path: Path) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) and item.strip() for item in raw):
        raise invalid(path, f"expected a non-empty list of example utterances (strings), got {describe(raw)}")
    return tuple(raw)


def similar_to(raw: object, path: Path) -> Condition:
    """Compile `similar_to: {examples: [...], threshold: T}`.

    Raises:
        PolicyError: a key is unknown or a value is wrong.
    """
    entries = require_mapping(raw, path, "examples and a threshold")
    for key in entries:
        if key not in _SIMILAR_KEYS:
            raise unknown(path, key, _SIMILAR_KEYS, "key")
    if "examples" not in entries or "threshold" not in entries:
        raise invalid(path, "similar_to needs `examples` and a `threshold`")
    examples = _examples(entries["examples"], (*path, "examples"))
    threshold = entries["threshold"]
    if not is_number(threshold) or not -1 <= threshold <= 1:
        raise invalid((*path, "threshold"), f"expected a number from -1 to 1, got {describe(threshold)}")
    limit = float(threshold)
    label = f"similar_to {len(examples)} examples >= {limit}"

    def test(features: RequestFeatures) -> bool:
        return features.semantic.similarity[examples][0] >= limit

    def explain(features: RequestFeatures) -> Check:
        score, closest = features.semantic.similarity[examples]
        held = score >= limit
        return Check(held, f"similar_to: {score:.3f} {'>=' if held else '<'} {limit} (closest example: {closest!r})")

    return Condition(test, explain, label, SemanticNeeds(examples=frozenset({examples})), _unsettled)


def retrieval_score(raw: object, path: Path) -> Condition:
    """Compile `retrieval_score: {route: NAME, gt: X}` (gt, gte, lt, lte).

    Raises:
        PolicyError: the route is missing, an operator unknown or a bound not a number.
    """
    entries = dict(require_mapping(raw, path, "a route and bounds (gt, gte, lt, lte)"))
    route = entries.pop("route", None)
    if not isinstance(route, str) or not route:
        raise invalid(path, f"retrieval_score needs the `route` whose index to search, got {describe(route)}")
    if not entries:
        raise invalid(path, "retrieval_score needs a bound: gt, gte, lt or lte")
    limits = bounds(entries, path, ("gt", "gte", "lt", "lte"))
    shown = " and ".join(f"{symbol} {bound}" for symbol, _, bound in limits)

    def test(features: RequestFeatures) -> bool:
        score = features.semantic.retrieval[route]
        return score is not None and all(compare(score, bound) for _, compare, bound in limits)

    def explain(features: RequestFeatures) -> Check:
        score = features.semantic.retrieval[route]
        if score is None:
            return Check(False, f"retrieval_score of '{route}': the index is empty")
        held = all(compare(score, bound) for _, compare, bound in limits)
        return Check(held, f"retrieval_score of '{route}': {score:.3f} {'is' if held else 'is not'} {shown}")

    label = f"retrieval_score of '{route}' {shown}"
    return Condition(test, explain, label, SemanticNeeds(retrieval_routes=frozenset({route})), _unsettled)
