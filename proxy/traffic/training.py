"""`select_training(exchanges, ...)`: which logged exchanges make training lines, which the holdout, and why not.

Kept: chat completions exchanges (`endpoint == "chat.completions"`) that succeeded (status 200, no error)
with their content logged (`request` and `answer`), at least `min_score` when one is given (an exchange
without a score is then left out), and that `training_example` can write. With `dedupe`, one example per
prompt (the same messages and tools): the best-scored, then the earliest. Then each goes to the holdout
when it is in the register already or `held_out(request_id, share)`, else to training; so an exchange
held out once is never trained on, whatever the share of a later export. Nor is its prompt: an example
whose prompt (the same messages and tools) is held out, in the register or in this export, is left out
of training (counted as `its prompt is held out`), so the holdout measures prompts the fine-tune never saw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.traffic.finetune import Example, Skipped, TrainingLine, training_example
from proxy.traffic.holdout import Held, Holdout, held_out
from proxy.traffic.record import Exchange

__all__ = ["Selection", "select_training"]

CHAT_ENDPOINT = "chat.completions"


@dataclass(slots=True)
class Selection:
    """The training lines, the holdout's (and the exchanges newly held out), and the count of each reason to skip."""

    train: list[TrainingLine] = field(default_factory=list)
    holdout: list[TrainingLine] = field(default_factory=list)
    newly_held: list[Held] = field(default_factory=list)
    """Held out by this export and not yet in the register."""
    skipped: Counter[str] = field(default_factory=Counter)


def _reason(exchange: Exchange, min_score: float | None) -> str | None:
    if exchange.endpoint != CHAT_ENDPOINT:
        return f"endpoint {exchange.endpoint}"
    if exchange.status != 200 or exchange.error is not None:
        return "failed"
    if exchange.request is None or exchange.answer is None:
        return "no content logged"
    if min_score is not None and (exchange.score is None or exchange.score < min_score):
        return "score below --min-score (or none)"
    return None


def _rank(exchange: Exchange) -> float:
    return float("-inf") if exchange.score is None else exchange.score


def select_training(
    exchanges: Iterable[Exchange],
    *,
    held: Holdout,
    share: float,
    min_score: float | None = None,
    dedupe: bool = False,
) -> Selection:
    """Split `exchanges` (in time order) into training and holdout lines; `held`: what the register holds."""
    selection = Selection()
    kept: list[tuple[Exchange, Example]] = []
    best: dict[str, int] = {}  # prompt key → index in `kept`
    for exchange in exchanges:
        reason = _reason(exchange, min_score)
        if reason is not None:
            selection.skipped[reason] += 1
            continue
        if exchange.request is None or exchange.answer is None:
            continue  # counted by `_reason` already
        made = training_example(exchange.request, exchange.answer)
        if isinstance(made, Skipped):
            selection.skipped[made.reason] += 1
            continue
        if dedupe and made.prompt_key in best:
            selection.skipped["duplicate prompt"] += 1
            index = best[made.prompt_key]
            if _rank(exchange) > _rank(kept[index][0]):
                kept[index] = (exchange, made)
            continue
        best[made.prompt_key] = len(kept)
        kept.append((exchange, made))
    held_prompts = set(held.prompts)
    training: list[Example] = []
    for exchange, made in kept:
        if exchange.request_id in held.ids:
            selection.holdout.append(made.line)
            held_prompts.add(made.prompt_key)
        elif held_out(exchange.request_id, share):
            selection.holdout.append(made.line)
            selection.newly_held.append(Held(exchange.request_id, exchange.route, exchange.rule, made.prompt_key))
            held_prompts.add(made.prompt_key)
        else:
            training.append(made)
    for made in training:
        if made.prompt_key in held_prompts:
            selection.skipped["its prompt is held out"] += 1
        else:
            selection.train.append(made.line)
    return selection
