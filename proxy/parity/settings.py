"""A rule's `parity:` and `canary:` blocks, as the policy file will write them (not read by the loader yet).

```yaml
rules:
  - name: classify
    when: {...}
    route: frontier
    parity:
      reference: frontier        # the route that also answers a sample of the rule's traffic
      sample: 0.1                # that sample's share
      evaluators: [normalised]   # in order; the first with a verdict decides (strings or {kind: ..., ...})
      judge: {route: frontier, prompt: policies/judge.md, audit: 0.05}   # where none decides; audit: a share of
                                 # the decided pairs judged too, for the agreement report
      margin: 0.95               # pass: the candidate at least as good in 95% of pairs
      confidence: 0.95
      test: sequential           # or wilson (one look)
      min_pairs: 30
    canary:
      candidate: support-ft
      steps: [1, 5, 25, 50, 100] # percent of the rule's traffic
      min_pairs: 200             # per step, before it may advance
      guardrails: {error_rate: 0.02, latency_p95_ms: 2500, cost_usd: "0.002", min_requests: 50}
      holdout: 0.05              # at 100%, this share still goes to the reference
```

Evaluator kinds: `exact`, `normalised`, `json` (`schema`, `fields`, `use_request_schema`), `tool_calls`
(`arguments`), `semantic` (`threshold`); each deterministic one but `semantic` has `disagree: loss|undecided`.
`check_blocks` holds what spans the two blocks and the routes (the loader calls it when it reads them).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec

from proxy.parity.evaluators import DEFAULT_SIMILARITY_THRESHOLD

__all__ = [
    "CanarySettings",
    "EvaluatorSpec",
    "ExactSpec",
    "GuardrailSettings",
    "JsonSpec",
    "JudgeSettings",
    "NormalisedSpec",
    "ParitySettings",
    "SemanticSpec",
    "ToolCallsSpec",
    "check_blocks",
]

Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
Probability = Annotated[float, msgspec.Meta(gt=0, lt=1)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
Disagree = Literal["loss", "undecided"]
RouteName = Annotated[str, msgspec.Meta(min_length=1)]


class _Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    """An evaluator as the policy names it."""


class ExactSpec(_Spec, frozen=True, tag="exact"):
    """The texts equal, character for character."""

    disagree: Disagree = "loss"


class NormalisedSpec(_Spec, frozen=True, tag="normalised"):
    """The texts equal after case, whitespace and punctuation are set aside (labels)."""

    disagree: Disagree = "loss"


class JsonSpec(_Spec, frozen=True, tag="json"):
    """Valid JSON (against `schema`, or the request's own), and the `fields` (dotted paths) equal."""

    schema: dict[str, Any] | None = None
    fields: list[Annotated[str, msgspec.Meta(min_length=1)]] = []
    use_request_schema: bool = True
    disagree: Disagree = "loss"


class ToolCallsSpec(_Spec, frozen=True, tag="tool_calls"):
    """The same functions called, with the same arguments unless `arguments` is false, in any order."""

    arguments: bool = True
    disagree: Disagree = "loss"


class SemanticSpec(_Spec, frozen=True, tag="semantic"):
    """The local embedding model's cosine at or above `threshold`: a tie; below, for the judge."""

    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = DEFAULT_SIMILARITY_THRESHOLD


EvaluatorSpec = ExactSpec | NormalisedSpec | JsonSpec | ToolCallsSpec | SemanticSpec
_SHORTHAND: dict[str, EvaluatorSpec] = {
    "exact": ExactSpec(),
    "normalised": NormalisedSpec(),
    "json": JsonSpec(),
    "tool_calls": ToolCallsSpec(),
    "semantic": SemanticSpec(),
}


class JudgeSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A chat route that compares the answers where no deterministic evaluator decides."""

    route: RouteName
    prompt: str | None = None
    """The prompt file (None: `proxy/parity/judge.md`); a relative path is the policy file's directory's."""
    audit: Share = 0.0
    """The share of pairs a deterministic evaluator decided that the judge is asked about too."""


class ParitySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A rule's `parity:` block: pairs with a reference route, how they are compared, and the gate."""

    reference: RouteName
    sample: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.05
    evaluators: list[Literal["exact", "normalised", "json", "tool_calls", "semantic"] | EvaluatorSpec] = []
    judge: JudgeSettings | None = None
    margin: Probability = 0.95
    confidence: Probability = 0.95
    test: Literal["sequential", "wilson"] = "sequential"
    min_pairs: AtLeastOne = 30

    def __post_init__(self) -> None:
        if not self.evaluators and self.judge is None:
            raise ValueError("parity needs at least one evaluator or a judge")
        kinds = [spec.__struct_config__.tag for spec in self.specs()]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"an evaluator is named twice in {kinds}")

    def specs(self) -> list[EvaluatorSpec]:
        """The evaluators in order, a name standing for its kind with every default."""
        return [_SHORTHAND[spec] if isinstance(spec, str) else spec for spec in self.evaluators]


class GuardrailSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits on the candidate's own traffic at the current step; one over its limit rolls the canary back."""

    error_rate: Share | None = 0.05
    """The share of the candidate's requests that failed (None: not watched)."""
    latency_p95_ms: Annotated[float, msgspec.Meta(gt=0)] | None = None
    cost_usd: str | None = None
    """The mean cost of one candidate request, a decimal string (`"0.002"`)."""
    min_requests: AtLeastOne = 20
    """Fewer candidate requests than this at the step: the guardrails have nothing to say yet."""

    def __post_init__(self) -> None:
        if self.cost_usd is not None:
            try:
                cost = Decimal(self.cost_usd)
            except InvalidOperation:
                raise ValueError(f"cost_usd {self.cost_usd!r} is not a decimal number") from None
            if not cost.is_finite() or cost <= 0:
                raise ValueError(f"cost_usd {self.cost_usd!r} must be a positive amount")

    @property
    def cost(self) -> Decimal | None:
        """`cost_usd` as a Decimal."""
        return Decimal(self.cost_usd) if self.cost_usd is not None else None


class CanarySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A rule's `canary:` block: the candidate route's share, raised step by step while the gate passes."""

    candidate: RouteName
    steps: list[Annotated[int, msgspec.Meta(ge=1, le=100)]] = msgspec.field(default_factory=lambda: [1, 5, 25, 50, 100])
    """Percent of the rule's traffic, increasing."""
    min_pairs: AtLeastOne = 100
    """Pairs evaluated at a step before it may advance."""
    guardrails: GuardrailSettings = GuardrailSettings()
    holdout: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.05
    """The share of the rule's traffic that stays with the reference even at 100%."""

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a canary needs at least one step")
        if any(later <= earlier for earlier, later in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"the steps must increase: {self.steps}")


def check_blocks(parity: ParitySettings | None, canary: CanarySettings | None, routes: frozenset[str]) -> None:
    """What a rule's two blocks must agree on with each other and the routes.

    Raises:
        ValueError: a route is unknown, the canary has no parity block, or its candidate is the reference.
    """
    if canary is not None and parity is None:
        raise ValueError("canary needs a parity block: it moves by the parity gate")
    named = [("parity.reference", parity.reference)] if parity is not None else []
    if parity is not None and parity.judge is not None:
        named.append(("parity.judge.route", parity.judge.route))
    if canary is not None:
        named.append(("canary.candidate", canary.candidate))
    for where, route in named:
        if route not in routes:
            raise ValueError(f"{where}: no route is named {route!r}")
    if canary is not None and parity is not None and canary.candidate == parity.reference:
        raise ValueError(f"canary.candidate: {canary.candidate!r} is the parity reference itself")
