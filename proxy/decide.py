"""`decide_semantically`: where a call goes: the route its `model` names, else the policy's first matching rule.

The rules are written for conversations (chat, Responses). A call of another kind (embeddings, legacy
completions) goes where its `model` says instead (`decide_by_model`): the route that model names, else a
route serving that kind for that model, else the default upstream's route, with the caller's own model.

The pipeline, `turnout test` and `turnout explain` all decide through this module. The rules are tried in
one pass (`PolicyEngine.decisions`, `PolicyEngine.explanations`); when a rule first needs the meaning-based
features, the pass stops there, the last user message is embedded once (`SemanticScorer.features`), and
the pass goes on from that rule.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any, TypeVar

from policies import Decision, Explanation, PolicyEngine, SemanticFeatures, SemanticNeeds
from proxy.endpoints.base import Codec
from proxy.semantic import SemanticScorer
from routes import Call, Route

__all__ = ["decide_by_model", "decide_semantically", "explain_semantically"]

T = TypeVar("T")


def _unruled(asked: str, named: Mapping[str, str], default_route: str) -> Decision:
    """The decision when no rule is consulted: the route (or alias) the `model` asked names, else the one upstream."""
    target = named.get(asked)
    if target is not None:
        reason = f"the client asked for '{asked}'"
        return Decision(route=target, rule="model", reason=reason, fallbacks=(), shadow=None)
    reason = "no rules: the one upstream, with the caller's model"
    return Decision(route=default_route, rule="default", reason=reason, fallbacks=(), shadow=None)


def decide_by_model(
    codec: Codec[Any], call: Call[Any], *, routes: Mapping[str, Route], named: Mapping[str, str], default_route: str
) -> Decision:
    """Where a call of a kind no rule is written for goes, by its `model` alone (never by the rules).

    The route (or alias) the model names, whatever it serves (one that does not serve the kind answers
    `unsupported_endpoint`); else the first route serving the kind whose `model` is the one asked; else
    `default_route`, the default upstream's, with the caller's own model.
    """
    asked = codec.requested_model(call.body)
    target = named.get(asked)
    if target is not None:
        return Decision(route=target, rule="model", reason=f"the client asked for '{asked}'")
    kind = codec.kind
    for name, route in routes.items():
        if route.model == asked and kind in route.endpoints:
            return Decision(route=name, rule="model", reason=f"the route serves {kind} for the model '{asked}'")
    reason = f"no route serves {kind} for '{asked}': the default upstream, with the caller's model"
    return Decision(route=default_route, rule="default", reason=reason)


async def _in_one_pass(
    steps: Generator[SemanticNeeds, SemanticFeatures, T], call: Call[Any], scorer: SemanticScorer
) -> T:
    """What `steps` returns, given the meaning-based features of `call`'s question (computed once) when it asks."""
    try:
        next(steps)  # what it needs: the scorer computes all the policy's needs from one embedding
        steps.send(await scorer.features(call.question))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return] # StopIteration.value is untyped; `steps` returns T
    raise RuntimeError("the policy asked for the meaning-based features twice")  # pragma: no cover


async def decide_semantically(
    codec: Codec[Any],
    call: Call[Any],
    *,
    policy: PolicyEngine | None,
    named: Mapping[str, str],
    default_route: str,
    scorer: SemanticScorer | None,
) -> Decision:
    """Where `call` goes: the route its `model` names (route or alias), else the policy's first matching rule.

    Without a policy every call takes `default_route`, the one upstream, with the caller's own model.
    `scorer` is None when the policy has no meaning-based condition: then the rules are a plain loop.
    """
    asked = codec.requested_model(call.body)
    if policy is None or asked in named:
        return _unruled(asked, named, default_route)
    features = codec.features(call)
    if scorer is None:
        return policy.decide(features)
    return await _in_one_pass(policy.decisions(features), call, scorer)


async def explain_semantically(
    codec: Codec[Any],
    call: Call[Any],
    *,
    policy: PolicyEngine | None,
    named: Mapping[str, str],
    default_route: str,
    scorer: SemanticScorer | None,
) -> tuple[Decision, Explanation | None]:
    """`decide_semantically`, with the rules' explanation (None when no rule was consulted)."""
    asked = codec.requested_model(call.body)
    if policy is None or asked in named:
        return _unruled(asked, named, default_route), None
    features = codec.features(call)
    if scorer is None:
        explanation = policy.explain(features)
    else:
        explanation = await _in_one_pass(policy.explanations(features), call, scorer)
    return explanation.decision, explanation
