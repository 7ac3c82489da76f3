"""`Pairing`: the request path's side of parity: which route a canary rule's request takes, and its pair.

For a rule with a `parity:` block (`policies.experiments`):
- `trial(decision)`: with a canary, the candidate takes the canary's share of the rule's requests (the
  reference, the rule's route, the rest, and is the candidate's first fallback); a `parity.sample` share of
  them is sampled for a pair. The answer carries `x-turnout-canary` (`header`).
- `finished(...)`: a candidate's request counts for the guardrails; a sampled, non-streamed answer has the
  other route answer the same request in the background (`proxy.shadow.run_shadow`, priced as evaluation
  spend), the two are evaluated (the rule's deterministic evaluators, then its judge if none decides), the
  pair is stored (`proxy.auth.pairs`, with both texts only when content is logged) and the canary reviewed.

A streamed answer is kept as it is relayed (when sampled) and assembled at its end (`recording`, the codec's
replay of the stored stream); its background copy asks for the whole answer (`unstreamed`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from policies import Decision, Experiment
from proxy.accounting.parity import ParityMetrics
from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import Tally
from proxy.auth.pairs import PairRow, PairStore
from proxy.auth.store import DatabaseError, open_database
from proxy.canaries import Canaries
from proxy.config.policyfile import Deployment
from proxy.config.settings import Settings
from proxy.endpoints.base import Codec
from proxy.endpoints.chat import CHAT
from proxy.outcome import OutcomeError
from proxy.parity.answers import Pair, text_of
from proxy.parity.evaluate import build_evaluators, evaluate
from proxy.parity.evaluators import EmbedFunction
from proxy.parity.judge import Judge, JudgeError
from proxy.wire.endpoint import Body
from proxy.wire.errors import ProxyError

__all__ = [
    "CANARY_HEADER",
    "Ask",
    "Background",
    "Copy",
    "Pairing",
    "Trial",
    "build_pairing",
    "canary_headers",
    "judge_body",
    "open_pair_store",
    "pair_store",
    "unstreamed",
    "with_canary",
]

logger = logging.getLogger("turnout.parity")

CANARY_HEADER = "x-turnout-canary"
Copy = Callable[[str, str], Awaitable[tuple[Tally, bytes | None]]]
"""Sends the request being answered to a route in the background: (route, kind) → its tally and answer body."""
Ask = Callable[[str, list[dict[str, str]]], Awaitable[tuple[Tally, bytes | None]]]
"""Asks a chat route other messages (the judge's): (route, messages) → its tally and answer body."""


@dataclass(frozen=True, slots=True)
class Background:
    """How a request's pair is made: its copy to the other route, the judge's questions, the request itself."""

    copy: Copy
    ask: Ask
    request: bytes
    """The request body as received (what the judge reads of the request)."""


@dataclass(frozen=True, slots=True)
class Trial:
    """What a request of a parity rule is part of: its rule, the canary's version and share, and its roles."""

    experiment: Experiment
    served: str
    """The route chosen to answer it."""
    version: int = 0
    share: float | None = None
    """The candidate's share of the rule's traffic (None: the rule has no canary)."""
    step: int | None = None
    sampled: bool = False
    verdict: str = "undecided"

    @property
    def candidate_served(self) -> bool:
        """Whether the candidate route was chosen."""
        return self.served == self.experiment.candidate

    @property
    def other(self) -> str:
        """The route that answers the pair in the background."""
        experiment = self.experiment
        return experiment.reference if self.candidate_served else experiment.candidate

    def header(self) -> tuple[str, str] | None:
        """`x-turnout-canary: <rule>;step=25;share=0.25;verdict=undecided;served=candidate` (None: no canary)."""
        if self.share is None:
            return None
        role = "candidate" if self.candidate_served else "reference"
        value = f"{self.experiment.rule};step={self.step};share={self.share:g};verdict={self.verdict};served={role}"
        return CANARY_HEADER, value


class Pairing:
    """The parity rules of one policy: their canaries' choices and their pairs."""

    def __init__(
        self,
        experiments: Mapping[str, Experiment],
        store: PairStore,
        canaries: Canaries,
        *,
        metrics: ParityMetrics | None = None,
        content: bool = False,
        rng: random.Random | None = None,
        embed: EmbedFunction | None = None,
    ) -> None:
        self.experiments = experiments
        self._store, self.canaries, self._metrics, self._content = store, canaries, metrics, content
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not cryptography
        self._evaluators = {rule: build_evaluators(e.parity.specs(), embed) for rule, e in experiments.items()}

    async def trial(self, decision: Decision) -> tuple[Decision, Trial | None]:
        """The decision to follow for a request of `decision.rule`, and its trial (None: no parity rule)."""
        experiment = self.experiments.get(decision.rule)
        if experiment is None or decision.route != experiment.route:
            return decision, None
        sampled = self._rng.random() < experiment.parity.sample
        if experiment.canary is None:
            return decision, Trial(experiment, decision.route, sampled=sampled)
        try:
            standing = await self.canaries.standing(experiment.rule)
        except DatabaseError as exc:
            logger.warning("canary %s: the state cannot be read (%s): the reference answers", experiment.rule, exc)
            return decision, None
        share = self.canaries.share(experiment.rule, standing)
        trial = Trial(
            experiment,
            decision.route,
            version=standing.state.version,
            share=share,
            step=standing.state.share,
            sampled=sampled,
            verdict=self.canaries.verdict(experiment.rule),
        )
        if self._rng.random() >= share:
            return decision, trial
        fallbacks = (experiment.reference, *(f for f in decision.fallbacks if f != experiment.reference))
        chosen = replace(decision, route=experiment.candidate, fallbacks=fallbacks)
        return chosen, replace(trial, served=experiment.candidate)

    async def finished(
        self,
        trial: Trial,
        request_id: str,
        *,
        answered_by: str | None,
        body: bytes | None,
        latency_ms: float,
        cost: Decimal | None,
        background: Background,
    ) -> None:
        """After the request: the guardrails, then (if sampled and answered whole by its route) its pair."""
        experiment = trial.experiment
        failed = answered_by != trial.served
        if experiment.canary is not None and trial.candidate_served:
            self.canaries.observe(experiment.rule, trial.version, failed=failed, latency_ms=latency_ms, cost=cost)
        if trial.sampled and not failed and body is not None:
            await self._pair(trial, request_id, body, background)
        elif experiment.canary is not None and trial.candidate_served:
            await self._review(experiment.rule)

    async def _pair(self, trial: Trial, request_id: str, body: bytes, background: Background) -> None:
        experiment = trial.experiment
        kind = "reference" if trial.candidate_served else "candidate"
        tally, other = await background.copy(trial.other, kind)
        if self._metrics is not None and tally.cost is not None:
            self._metrics.evaluation_spent(experiment.rule, kind, tally.cost)
        if experiment.canary is not None and not trial.candidate_served:
            self.canaries.observe(
                experiment.rule, trial.version, failed=other is None, latency_ms=tally.seconds() * 1000, cost=tally.cost
            )
        if other is not None:
            served, paired = _answer(body), _answer(other)
            if served is not None and paired is not None:
                candidate, reference = (served, paired) if trial.candidate_served else (paired, served)
                pair = Pair(candidate, reference, _answer(background.request))
                await self._store_pair(trial, request_id, pair, background.ask)
        if experiment.canary is not None:
            await self._review(experiment.rule)
        elif self._metrics is not None:  # no canary to review: the gate's gauges are brought up to date alone
            try:
                await self.canaries.evidence(experiment, None)
            except DatabaseError as exc:
                logger.warning("parity %s: the gate not read (%s)", experiment.rule, exc)

    async def _store_pair(self, trial: Trial, request_id: str, pair: Pair, ask: Ask) -> None:
        experiment = trial.experiment
        judge = self._judge(experiment, ask)
        settings = experiment.parity.judge
        audit = settings is not None and self._rng.random() < settings.audit
        try:
            evaluation = await evaluate(pair, self._evaluators[experiment.rule], judge, audit=audit)
        except JudgeError as exc:
            logger.warning("parity %s: the judge failed (%s): the pair is left out", experiment.rule, exc)
            return
        audited = evaluation.judge if evaluation.decided_by != "judge" else None
        outcome = str(evaluation.outcome)
        row = PairRow(
            at=datetime.now(UTC),
            request_id=request_id,
            rule=experiment.rule,
            candidate=experiment.candidate,
            reference=experiment.reference,
            outcome=outcome,
            evaluator=evaluation.decided_by,
            canary_version=trial.version,
            candidate_text=text_of(pair.candidate) if self._content else None,
            reference_text=text_of(pair.reference) if self._content else None,
            judge_outcome=str(audited.outcome) if audited is not None else None,
        )
        try:
            await self._store.record_pair(row)
        except DatabaseError as exc:
            logger.warning("parity %s: the pair could not be stored (%s)", experiment.rule, exc)
            return
        if self._metrics is not None:
            self._metrics.paired(experiment.rule, experiment.candidate, outcome)

    def _judge(self, experiment: Experiment, ask: Ask) -> Judge | None:
        """The rule's judge, asking its route through `ask` (its cost is evaluation spend)."""
        settings, prompt = experiment.parity.judge, experiment.judge_prompt
        if settings is None or prompt is None:
            return None
        route, rule, metrics = settings.route, experiment.rule, self._metrics

        async def complete(messages: list[dict[str, str]]) -> str:
            tally, body = await ask(route, messages)
            if metrics is not None and tally.cost is not None:
                metrics.evaluation_spent(rule, "judge", tally.cost)
            answer = _answer(body) if body is not None else None
            text = text_of(answer) if answer is not None else None
            if text is None:
                raise JudgeError(f"the judge route {route!r} gave no answer")
            return text

        return Judge(complete, prompt, name="judge")

    def recording(
        self,
        events: AsyncGenerator[bytes, None],
        codec: Codec[Any],
        *,
        keep: bool,
        done: Callable[[bool, bytes | None], None],
    ) -> AsyncGenerator[bytes, None]:
        """`events` passed through; at their end `done(ended, whole answer)` (False, None: cut off or failed).

        With `keep`, the events are kept and the whole answer assembled from them (the codec's replay of them).
        """
        return _recorded(events, codec, keep, done)

    async def _review(self, rule: str) -> None:
        try:
            await self.canaries.review(rule)
        except DatabaseError as exc:
            logger.warning("canary %s: not reviewed (%s)", rule, exc)


def canary_headers(trial: Trial | None) -> tuple[tuple[str, str], ...]:
    """The `x-turnout-canary` header of a canary rule's answer (none for other rules)."""
    header = trial.header() if trial is not None else None
    return (header,) if header is not None else ()


def with_canary(error: OutcomeError, trial: Trial | None) -> OutcomeError:
    """`error` with the canary's header on its outcome too."""
    if trial is None:
        return error
    headers = (*error.outcome.route_headers, *canary_headers(trial))
    return OutcomeError(error.error, replace(error.outcome, route_headers=headers))


def unstreamed(codec: Codec[Any], raw: bytes) -> Body[Any]:
    """A streamed request's body asking for the whole answer instead (what a pair's background copy sends)."""
    value = json.loads(raw)
    value.pop("stream", None)
    value.pop("stream_options", None)
    return codec.decode(json.dumps(value).encode())


async def _recorded(
    source: AsyncGenerator[bytes, None], codec: Codec[Any], keep: bool, done: Callable[[bool, bytes | None], None]
) -> AsyncGenerator[bytes, None]:
    parts: list[bytes] = []
    ended, whole = False, None
    try:
        async with contextlib.aclosing(source):
            async for events in source:
                if keep:
                    parts.append(events)
                yield events
        ended = True
        stored = codec.stored_stream(b"".join(parts)) if parts else None
        if stored is not None:
            with contextlib.suppress(ProxyError, ValueError):  # an answer the codec cannot read: no pair
                whole = codec.replay(stored, stream=False, wants_usage=False).body
    finally:
        done(ended, whole)


def judge_body(model: str, messages: list[dict[str, str]]) -> Body[Any]:
    """The chat body the judge is asked with."""
    return CHAT.decode(json.dumps({"model": model, "messages": messages}).encode())


def _answer(body: bytes) -> Mapping[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@contextlib.asynccontextmanager
async def open_pair_store(settings: Settings) -> AsyncIterator[PairStore | None]:
    """Where pairs and canaries live, open while the app runs: `parity_redis_url`, else the keys' database.

    None when the starting policy has no parity rule (one added by a reload waits for a restart).
    """
    if not settings.deployment.experiments:
        yield None
        return
    database = pair_store(settings.deployment)
    await database.open()
    logger.info("parity pairs and canaries in %s", database.display_url)
    try:
        yield database
    finally:
        await database.close()


def pair_store(deployment: Deployment) -> PairStore:
    """The store a deployment names: Redis at `parity_redis_url`, else the database at `database_url` (not open)."""
    if deployment.parity_redis_url is not None:
        from proxy.auth.pairs_redis import RedisPairStore  # only with Redis: redis-py is slow to import

        return RedisPairStore(deployment.parity_redis_url, prefix=deployment.parity_redis_prefix)
    return open_database(deployment.database_url)


def build_pairing(
    settings: Settings, store: PairStore | None, recorder: Recorder | None, embed: EmbedFunction | None = None
) -> Pairing | None:
    """The pairing of a policy's parity rules (None: it has none, or no store is open).

    `embed` is the local embedding model, for the `semantic` evaluator.
    """
    experiments = settings.deployment.experiments
    if not experiments or store is None:
        return None
    metrics = recorder.parity if recorder is not None else None
    canaries = Canaries(experiments, store, metrics=metrics, ttl=settings.deployment.canary_ttl)
    return Pairing(experiments, store, canaries, metrics=metrics, content=settings.server.log_content, embed=embed)
