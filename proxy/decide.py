"""`decide`: where a call goes: the route its `model` names, else the policy's first matching rule.

The pipeline, `turnout test` and `turnout explain` all decide through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies import Decision, PolicyEngine, SemanticFeatures, SemanticFeaturesNeeded
from proxy.endpoints.base import Codec
from proxy.semantic import SemanticScorer
from routes import Call

__all__ = ["decide", "decide_semantically"]


def decide(
    codec: Codec[Any],
    call: Call[Any],
    *,
    policy: PolicyEngine | None,
    named: Mapping[str, str],
    default_route: str,
    semantic: SemanticFeatures | None = None,
) -> Decision:
    """Where `call` goes: the route its `model` names (route or alias), else the policy's first matching rule.

    Without a policy every call takes `default_route`, the one upstream, with the caller's own model.
    `turnout test` and `turnout explain` decide through this same function.

    Raises:
        SemanticFeaturesNeeded: a meaning-based condition was reached and `semantic` is None.
    """
    asked = codec.requested_model(call.body)
    target = named.get(asked)
    if target is not None:
        reason = f"the client asked for '{asked}'"
        return Decision(route=target, rule="model", reason=reason, fallbacks=(), shadow=None)
    if policy is None:
        reason = "no rules: the one upstream, with the caller's model"
        return Decision(route=default_route, rule="default", reason=reason, fallbacks=(), shadow=None)
    features = codec.features(call)
    return policy.decide(features if semantic is None else features.with_semantic(semantic))


async def decide_semantically(
    codec: Codec[Any],
    call: Call[Any],
    *,
    policy: PolicyEngine | None,
    named: Mapping[str, str],
    default_route: str,
    scorer: SemanticScorer | None,
) -> Decision:
    """`decide`, computing the meaning-based features once, only when a rule reaches one (`policies.semantic`).

    The request's features are extracted once: the second pass over the rules reuses them.
    """
    if policy is None or codec.requested_model(call.body) in named:
        return decide(codec, call, policy=policy, named=named, default_route=default_route)
    features = codec.features(call)
    try:
        return policy.decide(features)
    except SemanticFeaturesNeeded:
        if scorer is None:
            raise
        semantic = await scorer.features(call.question)
    return policy.decide(features.with_semantic(semantic))
