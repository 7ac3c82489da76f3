"""`nearest:` a rule that chooses among many routes by their example utterances, or says "none of these".

A rule of `similar_to` conditions per route decides by rule order: the first route over its threshold
wins, however much closer the next one is. One `nearest` rule instead scores every route it lists and
takes the closest, under three tests:

- a route's score is the mean of the `k` highest cosine similarities between the last user message and
  the route's examples (k = 3 by default: one stray example close to anything does not decide alone);
- the best route's score must reach its threshold: the route's own `threshold` when given, else one
  calibrated when the policy is loaded from the examples themselves, leave-one-out: each example is
  scored against the route's other examples, and the threshold is the `calibration` quantile of those
  scores (0.2 by default: a fifth of the route's own examples, held out, would be turned away);
- the best route must lead the second-best by at least `margin` (0.01 by default).

When a test fails the rule does not match ("none of these"), and the request goes on to the later rules.
The scores come from outside the engine (`proxy.semantic` embeds and calibrates; see `policies.semantic`):
the rule declares a `NearestKey` (what to score), and reads `RouteScore`s back, best first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from policies.checks import Check, Condition, SemanticNeeds
from policies.errors import Path, describe, invalid, require_mapping, unknown
from policies.features import NearestKey, RequestFeatures, RouteScore

__all__ = ["DEFAULT_CALIBRATION", "DEFAULT_K", "DEFAULT_MARGIN", "Nearest", "Verdict", "read_nearest"]

DEFAULT_K = 3
DEFAULT_MARGIN = 0.01
DEFAULT_CALIBRATION = 0.2
_KEYS = ("routes", "margin", "k", "calibration")
_ROUTE_KEYS = ("examples", "threshold")
SHOWN = 3
"""How many routes `explain` shows, best first."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a `nearest` rule made of one request's scores."""

    route: str | None
    """The route chosen, or None: none of these."""
    why: str
    scores: tuple[RouteScore, ...]
    margin: float
    """The best route's lead over the second-best."""


@dataclass(frozen=True, slots=True)
class Nearest:
    """A checked `nearest:` block: the routes with their examples, and how the closest one is accepted."""

    key: NearestKey
    """What the proxy scores (routes, examples, k, calibration); thresholds and margin are the engine's."""
    thresholds: Mapping[str, float]
    """The routes given a `threshold` of their own (the others use their calibrated one)."""
    margin: float

    @property
    def routes(self) -> tuple[str, ...]:
        """The routes it chooses among, in the order written."""
        return tuple(route for route, _ in self.key.routes)

    def threshold(self, score: RouteScore) -> float:
        """The threshold `score`'s route must reach: its own, else the calibrated one."""
        return self.thresholds.get(score.route, score.calibrated)

    def verdict(self, features: RequestFeatures) -> Verdict:
        """The closest route, when it reaches its threshold and leads the next by the margin; else none."""
        scores = features.semantic.nearest[self.key]
        best = scores[0]
        second = scores[1].score if len(scores) > 1 else -1.0
        lead = best.score - second
        limit = self.threshold(best)
        if best.score < limit:
            why = f"none of these: the closest, {best.route}, scores {best.score:.3f} < its threshold {limit:.3f}"
            why += f" (leads by {lead:.3f})"
            return Verdict(None, why, scores, lead)
        if lead < self.margin:
            why = f"none of these: {best.route} leads {scores[1].route} by {lead:.3f} < the margin {self.margin}"
            return Verdict(None, why, scores, lead)
        why = f"nearest: {best.route} {best.score:.3f} >= {limit:.3f}, leads by {lead:.3f} >= {self.margin}"
        return Verdict(best.route, why, scores, lead)

    def choose(self, features: RequestFeatures) -> str:
        """The route of a request this rule matched."""
        route = self.verdict(features).route
        if route is None:
            raise LookupError("the nearest rule did not match this request")
        return route

    def condition(self) -> Condition:
        """The rule's meaning-based condition: some route is chosen."""
        label = f"nearest of {len(self.key.routes)} routes by meaning"

        def test(features: RequestFeatures) -> bool:
            return self.verdict(features).route is not None

        def explain(features: RequestFeatures) -> Check:
            verdict = self.verdict(features)
            children = tuple(
                Check(
                    score.score >= self.threshold(score),
                    f"{score.route}: {score.score:.3f} (threshold {self.threshold(score):.3f}, "
                    f"closest example: {score.closest!r})",
                )
                for score in verdict.scores[:SHOWN]
            )
            return Check(verdict.route is not None, verdict.why, children)

        return Condition(test, explain, label, SemanticNeeds(nearest=frozenset({self.key})), _unsettled)


def _unsettled(features: RequestFeatures) -> None:
    """Unknown until the meaning-based features are computed."""


def _number(raw: object, path: Path, low: float, high: float) -> float:
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not low <= raw <= high:
        raise invalid(path, f"expected a number from {low} to {high}, got {describe(raw)}")
    return float(raw)


def _examples(raw: object, path: Path) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) and item.strip() for item in raw):
        raise invalid(path, f"expected a non-empty list of example utterances (strings), got {describe(raw)}")
    return tuple(raw)


def read_nearest(raw: object, path: Path, known_route: Callable[[object, Path], str]) -> Nearest:
    """Check a `nearest:` block; `known_route(name, path)` checks a route name.

    Raises:
        PolicyError: a key is unknown, a value wrong, fewer than two routes, or a route unknown.
    """
    entries = require_mapping(raw, path, "routes with their examples (and margin, k, calibration)")
    for name in entries:
        if name not in _KEYS:
            raise unknown(path, name, _KEYS, "key")
    routes_raw = require_mapping(entries.get("routes"), (*path, "routes"), "route names to example lists")
    if len(routes_raw) < 2:
        raise invalid((*path, "routes"), "nearest needs at least two routes to choose among (one: use similar_to)")
    routes: list[tuple[str, tuple[str, ...]]] = []
    thresholds: dict[str, float] = {}
    k = entries.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise invalid((*path, "k"), f"expected a whole number >= 1, got {describe(k)}")
    for name, value in routes_raw.items():
        where_: Path = (*path, "routes", str(name))
        route = known_route(name, where_)
        if isinstance(value, Mapping):
            for name_ in value:
                if name_ not in _ROUTE_KEYS:
                    raise unknown(where_, name_, _ROUTE_KEYS, "key")
            examples = _examples(value.get("examples"), (*where_, "examples"))
            if "threshold" in value:
                thresholds[route] = _number(value["threshold"], (*where_, "threshold"), -1, 1)
        else:
            examples = _examples(value, where_)
        if len(examples) < 2 and route not in thresholds:
            raise invalid(where_, "a calibrated threshold needs at least two examples (or give a `threshold`)")
        routes.append((route, examples))
    margin = _number(entries.get("margin", DEFAULT_MARGIN), (*path, "margin"), 0, 2)
    calibration = _number(entries.get("calibration", DEFAULT_CALIBRATION), (*path, "calibration"), 0, 1)
    key = NearestKey(routes=tuple(routes), k=k, calibration=calibration)
    return Nearest(key=key, thresholds=thresholds, margin=margin)
