"""`pair_replays`: `turnout replay --execute`'s answers made into parity pairs, beside the live ones.

A replayed request of a rule with a `parity:` block makes a pair when one of its two answers is the
candidate's and the other the reference's: the logged answer from one route, the replayed answer from
the other. The pair is evaluated by the rule's deterministic evaluators, as a live pair is (the judge is
not asked here: a pair none of them decides is stored undecided, as a live pair without a judge is), and
stored in the policy's pair store with the canary's current version, so the gate counts it. Answers that
failed, and pairs of any other two routes, make no pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from proxy.auth.pairs import PairRow
from proxy.config.settings import Settings
from proxy.pairing import pair_store
from proxy.parity.answers import Pair
from proxy.parity.evaluate import build_evaluators, evaluate
from proxy.replay import Decided
from proxy.replay_sample import Sent
from proxy.semantic import LocalEmbedders
from routes.knowledge.embedding import LocalEmbedder

__all__ = ["PairedReplays", "pair_replays"]


@dataclass(slots=True)
class PairedReplays:
    """What the replayed answers made: pairs stored by rule and outcome, and the answers that made none."""

    stored: dict[tuple[str, str], int] = field(default_factory=dict)
    """(rule, outcome) → pairs stored."""
    unpaired: int = 0


def _answer(value: object, status: object) -> Mapping[str, Any] | None:
    return value if status == 200 and isinstance(value, Mapping) else None


async def pair_replays(settings: Settings, decided: Sequence[Decided], sent: Sequence[Sent]) -> PairedReplays:
    """Evaluate and store the pairs that `sent` (the answers to `decided`, in its order) make.

    Raises:
        DatabaseError: the pair store cannot be opened or written.
    """
    experiments = settings.deployment.experiments
    paired = PairedReplays()
    if not experiments:
        paired.unpaired = len(sent)
        return paired
    local = LocalEmbedders()

    async def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return (await local.get(LocalEmbedder.NAME, 256).embed(texts)).vectors

    evaluators = {rule: build_evaluators(e.parity.specs(), embed) for rule, e in experiments.items()}
    store = pair_store(settings.deployment)
    await store.open()
    try:
        for item, answered in zip(decided, sent, strict=True):
            row, original = answered.row, answered.row["original"]
            experiment = experiments.get(str(row.get("rule")))
            replayed = _answer(row.get("answer"), row.get("status"))
            logged = _answer(original.get("answer"), original.get("status"))
            routes = (row.get("route"), original.get("route"))
            if experiment is None or replayed is None or logged is None:
                paired.unpaired += 1
                continue
            if routes == (experiment.candidate, experiment.reference):
                pair = Pair(replayed, logged, item.body)
            elif routes == (experiment.reference, experiment.candidate):
                pair = Pair(logged, replayed, item.body)
            else:
                paired.unpaired += 1
                continue
            evaluation = await evaluate(pair, evaluators[experiment.rule])
            canary = await store.canary(experiment.rule) if experiment.canary is not None else None
            outcome = str(evaluation.outcome)
            await store.record_pair(
                PairRow(
                    at=datetime.now(UTC),
                    request_id=f"{item.exchange.request_id}-replay",
                    rule=experiment.rule,
                    candidate=experiment.candidate,
                    reference=experiment.reference,
                    outcome=outcome,
                    evaluator=evaluation.decided_by,
                    canary_version=canary.version if canary is not None else 0,
                )
            )
            key = (experiment.rule, outcome)
            paired.stored[key] = paired.stored.get(key, 0) + 1
    finally:
        await store.close()
    return paired
