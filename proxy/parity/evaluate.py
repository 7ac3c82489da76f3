"""`evaluate`: a pair through the rule's evaluators, then the judge; `agreement`: the judge against them.

`agreement` counts how often the judge agrees with the deterministic evaluators where both gave a verdict.

The first deterministic evaluator with a verdict decides. The judge is asked only when none does, or, with
`audit`, on a pair they decided too (a sampled share, so that `agreement` has pairs to count); an audited
pair's outcome stays the deterministic one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy.parity.answers import Pair
from proxy.parity.evaluators import (
    EmbedFunction,
    Evaluator,
    JsonMatch,
    LabelMatch,
    Outcome,
    SemanticMatch,
    ToolCallMatch,
    Verdict,
)
from proxy.parity.gate import GateResult, gate
from proxy.parity.judge import Complete, Judge, load_prompt
from proxy.parity.settings import (
    EvaluatorSpec,
    ExactSpec,
    JsonSpec,
    JudgeSettings,
    NormalisedSpec,
    ParitySettings,
    ToolCallsSpec,
)

__all__ = ["Agreement", "Evaluation", "agreement", "build_evaluators", "build_judge", "evaluate", "gate_of"]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A pair's outcome, which evaluator decided it, and the verdicts asked for."""

    outcome: Outcome
    decided_by: str | None
    """The evaluator whose verdict is the outcome (None: undecided)."""
    deterministic: Verdict | None = None
    """The deciding deterministic verdict, or the last undecided one."""
    judge: Verdict | None = None


async def evaluate(
    pair: Pair, evaluators: Sequence[Evaluator], judge: Evaluator | None = None, *, audit: bool = False
) -> Evaluation:
    """`pair`'s outcome by the first deciding evaluator, else by the judge (and the judge's too, with `audit`)."""
    last: Verdict | None = None
    for evaluator in evaluators:
        last = await evaluator.evaluate(pair)
        if last.outcome.decided:
            judged = await judge.evaluate(pair) if judge is not None and audit else None
            return Evaluation(last.outcome, last.evaluator, last, judged)
    if judge is None:
        return Evaluation(Outcome.UNDECIDED, None, last)
    judged = await judge.evaluate(pair)
    return Evaluation(judged.outcome, judged.evaluator if judged.outcome.decided else None, last, judged)


@dataclass(frozen=True, slots=True)
class Agreement:
    """The judge against the deterministic evaluators, over the pairs both decided."""

    pairs: int = 0
    same_outcome: int = 0
    """Pairs where the judge's outcome is the deterministic one."""
    same_success: int = 0
    """Pairs where both agree on what the gate counts: the candidate at least as good, or not."""
    table: dict[tuple[Outcome, Outcome], int] = field(default_factory=dict)
    """(deterministic, judge) → pairs."""

    @property
    def outcome_rate(self) -> float | None:
        """The share of pairs with the same outcome (None: no pair)."""
        return self.same_outcome / self.pairs if self.pairs else None

    @property
    def success_rate(self) -> float | None:
        """The share of pairs where both agree on success (None: no pair)."""
        return self.same_success / self.pairs if self.pairs else None


def agreement(evaluations: Iterable[Evaluation]) -> Agreement:
    """How the judge agreed with the deterministic verdicts, on the pairs where both decided."""
    table: Counter[tuple[Outcome, Outcome]] = Counter()
    for evaluation in evaluations:
        deterministic, judged = evaluation.deterministic, evaluation.judge
        if (
            deterministic is not None
            and judged is not None
            and deterministic.outcome.decided
            and judged.outcome.decided
        ):
            table[deterministic.outcome, judged.outcome] += 1
    return Agreement(
        pairs=sum(table.values()),
        same_outcome=sum(count for (left, right), count in table.items() if left is right),
        same_success=sum(
            count for (left, right), count in table.items() if left.at_least_as_good == right.at_least_as_good
        ),
        table=dict(table),
    )


def build_evaluators(specs: Sequence[EvaluatorSpec], embed: EmbedFunction | None = None) -> list[Evaluator]:
    """The evaluators a rule's `parity.evaluators` name, in order.

    Raises:
        ValueError: `semantic` is named but no embed function is given.
    """
    built: list[Evaluator] = []
    for spec in specs:
        disagree = Outcome(getattr(spec, "disagree", "undecided"))
        if isinstance(spec, ExactSpec | NormalisedSpec):
            built.append(LabelMatch(normalised=isinstance(spec, NormalisedSpec), disagree=disagree))
        elif isinstance(spec, JsonSpec):
            built.append(JsonMatch(spec.schema, tuple(spec.fields), spec.use_request_schema, disagree))
        elif isinstance(spec, ToolCallsSpec):
            built.append(ToolCallMatch(arguments=spec.arguments, disagree=disagree))
        else:
            if embed is None:
                raise ValueError("the semantic evaluator needs an embed function")
            built.append(SemanticMatch(embed, spec.threshold))
    return built


def build_judge(settings: JudgeSettings, complete: Complete, base: Path | None = None) -> Judge:
    """The judge a rule's `parity.judge` describes, its prompt read from its file (relative to `base`).

    Raises:
        JudgeError: the prompt file cannot be read or lacks its placeholders.
    """
    prompt = settings.prompt
    path = (base / prompt if base is not None else Path(prompt)) if prompt is not None else None
    return Judge(complete, load_prompt(path), name="judge")


def gate_of(evaluations: Iterable[Evaluation], settings: ParitySettings) -> GateResult:
    """The parity gate on a rule's evaluated pairs, by its `parity` block; undecided pairs are left out."""
    decided = [evaluation.outcome for evaluation in evaluations if evaluation.outcome.decided]
    successes = sum(outcome.at_least_as_good for outcome in decided)
    return gate(
        successes,
        len(decided),
        margin=settings.margin,
        confidence=settings.confidence,
        test=settings.test,
        min_pairs=settings.min_pairs,
    )
