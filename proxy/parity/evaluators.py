"""The deterministic evaluators: whether a candidate route's answer is as good as the reference route's.

Each compares one `Pair` and returns a `Verdict`: `win`, `tie` or `loss` for the candidate against the
reference, or `undecided` when it cannot tell (no such part in either answer; two texts that are not similar
enough to call equal, which only a judge can weigh). The reference is taken as right: where a label, a JSON
value or a tool call differs, the candidate loses (`disagree=Outcome.UNDECIDED` hands such pairs on instead).
A candidate wins only where the reference broke the contract and it did not (invalid JSON, a schema broken).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from proxy.parity.answers import Call, Pair, request_schema, text_of, tool_calls_of
from proxy.parity.schema import UnsupportedSchemaError, same_json, schema_errors

__all__ = [
    "DEFAULT_SIMILARITY_THRESHOLD",
    "EmbedFunction",
    "Evaluator",
    "JsonMatch",
    "LabelMatch",
    "Outcome",
    "SemanticMatch",
    "ToolCallMatch",
    "Verdict",
    "cosine",
    "normalise_label",
]

DEFAULT_SIMILARITY_THRESHOLD = 0.65
"""Cosine at or above which two texts count as the same, by the local model (`wordllama/l2_supercat`, 256
dimensions). Measured by `python -m tests.bench.parity_similarity` on HWU64 utterance pairs: at 0.65, 0.9% of
pairs of two intents of one scenario (train split; 0.7% on test) reach it, and 12% of same-intent pairs (11%):
a tie here is rarely wrong, and most pairs go on to the judge. Measured on short utterances, not on answers."""

EmbedFunction = Callable[[Sequence[str]], Awaitable[npt.NDArray[np.float32]]]
"""Texts → one row per text (the local embedder's `lambda texts: (await embedder.embed(texts)).vectors`)."""


class Outcome(StrEnum):
    """The candidate's answer against the reference's."""

    WIN = "win"
    TIE = "tie"
    LOSS = "loss"
    UNDECIDED = "undecided"

    @property
    def decided(self) -> bool:
        """Win, tie or loss."""
        return self is not Outcome.UNDECIDED

    @property
    def at_least_as_good(self) -> bool:
        """Win or tie: what the parity gate counts as a success."""
        return self in (Outcome.WIN, Outcome.TIE)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One evaluator's outcome for one pair, and why (for the log and `turnout parity`)."""

    outcome: Outcome
    evaluator: str
    detail: str = ""


class Evaluator(Protocol):
    """Compares the two answers of a pair."""

    @property
    def name(self) -> str:
        """The evaluator's name, as the policy names it."""
        ...

    async def evaluate(self, pair: Pair) -> Verdict:
        """The candidate's outcome against the reference."""
        ...


_PUNCTUATION = re.compile(r"[\W_]+", re.UNICODE)


def normalise_label(text: str) -> str:
    """A label as compared: NFKC, case-folded, punctuation dropped, whitespace collapsed (` Positive.`: `positive`)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", folded).split())


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """Exact match of the answers' texts, or, `normalised`, of their `normalise_label` forms (classification)."""

    normalised: bool = True
    disagree: Outcome = Outcome.LOSS

    @property
    def name(self) -> str:
        """`normalised` or `exact`."""
        return "normalised" if self.normalised else "exact"

    async def evaluate(self, pair: Pair) -> Verdict:
        """Tie when the texts match, `disagree` when they do not, undecided when either has no text."""
        candidate, reference = text_of(pair.candidate), text_of(pair.reference)
        if candidate is None or reference is None:
            return Verdict(Outcome.UNDECIDED, self.name, "an answer has no text")
        if self.normalised:
            candidate, reference = normalise_label(candidate), normalise_label(reference)
        if candidate == reference:
            return Verdict(Outcome.TIE, self.name)
        return Verdict(self.disagree, self.name, f"{candidate[:40]!r} is not {reference[:40]!r}")


def _only_one(candidate_ok: bool, evaluator: str, what: str) -> Verdict:
    """One answer alone keeps the contract: a win when it is the candidate's, a loss when the reference's."""
    who = "candidate" if candidate_ok else "reference"
    return Verdict(Outcome.WIN if candidate_ok else Outcome.LOSS, evaluator, f"only the {who} {what}")


def _json(text: str | None) -> tuple[bool, Any]:
    if text is None:
        return False, None
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def _field(value: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return False, None
    return True, value


@dataclass(frozen=True, slots=True)
class JsonMatch:
    """Structured output: valid JSON, and the same `fields` (dotted paths; none: the whole value).

    Valid: the text parses, and follows `schema`, else the request's own schema when there is one.
    """

    schema: Mapping[str, Any] | None = None
    fields: tuple[str, ...] = ()
    use_request_schema: bool = True
    disagree: Outcome = Outcome.LOSS
    name: str = "json"

    def _valid(self, text: str | None, schema: Mapping[str, Any] | None) -> tuple[bool, Any]:
        parsed, value = _json(text)
        return (parsed and (schema is None or not schema_errors(value, schema))), value

    async def evaluate(self, pair: Pair) -> Verdict:
        """Win or loss when one answer alone is valid, tie or `disagree` when both are, undecided when neither is."""
        schema = self.schema
        if schema is None and self.use_request_schema:
            schema = request_schema(pair.request)
        try:
            candidate_ok, candidate = self._valid(text_of(pair.candidate), schema)
            reference_ok, reference = self._valid(text_of(pair.reference), schema)
        except UnsupportedSchemaError as exc:
            return Verdict(Outcome.UNDECIDED, self.name, str(exc))
        if candidate_ok != reference_ok:
            return _only_one(candidate_ok, self.name, "is valid")
        if not candidate_ok:
            return Verdict(Outcome.UNDECIDED, self.name, "neither answer is valid")
        for path in self.fields or ("",):
            left = _field(candidate, path) if path else (True, candidate)
            right = _field(reference, path) if path else (True, reference)
            if left[0] != right[0] or not same_json(left[1], right[1]):
                return Verdict(self.disagree, self.name, f"{path or 'the value'} differs")
        return Verdict(Outcome.TIE, self.name)


def _canonical(call: Call, arguments: bool) -> tuple[str, str] | None:
    """A call as compared: its name and its arguments as sorted JSON (None: the arguments are not JSON)."""
    if not arguments:
        return call.name, ""
    parsed, value = _json(call.arguments)
    return (call.name, json.dumps(_integral(value), sort_keys=True)) if parsed else None


def _integral(value: Any) -> Any:
    """JSON equality for sorted dumps: 2.0 is written as 2 (True stays True)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class ToolCallMatch:
    """Tool calls: the same functions called with the same arguments (parsed JSON), in any order (parallel calls)."""

    arguments: bool = True
    disagree: Outcome = Outcome.LOSS
    name: str = "tool_calls"

    async def evaluate(self, pair: Pair) -> Verdict:
        """Undecided when neither answer calls a tool; a loss when only the candidate's arguments are not JSON."""
        candidate_calls, reference_calls = tool_calls_of(pair.candidate), tool_calls_of(pair.reference)
        if not candidate_calls and not reference_calls:
            return Verdict(Outcome.UNDECIDED, self.name, "neither answer calls a tool")
        candidate = [_canonical(call, self.arguments) for call in candidate_calls]
        reference = [_canonical(call, self.arguments) for call in reference_calls]
        candidate_ok, reference_ok = None not in candidate, None not in reference
        if candidate_ok != reference_ok:
            return _only_one(candidate_ok, self.name, "has arguments that are JSON")
        if Counter(candidate) == Counter(reference):
            return Verdict(Outcome.TIE, self.name)
        names = sorted(call.name for call in candidate_calls), sorted(call.name for call in reference_calls)
        detail = f"calls {names[0]} against {names[1]}" if names[0] != names[1] else "different arguments"
        return Verdict(self.disagree, self.name, detail)


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    """Free text: a tie when the answers' embeddings' cosine reaches `threshold`; else undecided (a judge's call)."""

    embed: EmbedFunction
    threshold: float = DEFAULT_SIMILARITY_THRESHOLD
    below: Outcome = Outcome.UNDECIDED
    name: str = "semantic"

    async def evaluate(self, pair: Pair) -> Verdict:
        """The cosine of the two texts against the threshold."""
        candidate, reference = text_of(pair.candidate), text_of(pair.reference)
        if not candidate or not reference:
            return Verdict(Outcome.UNDECIDED, self.name, "an answer has no text")
        similarity = cosine(await self.embed([candidate, reference]))
        outcome = Outcome.TIE if similarity >= self.threshold else self.below
        return Verdict(outcome, self.name, f"cosine {similarity:.3f} against {self.threshold}")


def cosine(rows: npt.NDArray[np.float32]) -> float:
    """The cosine of a two-row array (rows need not be unit length; a zero row's cosine is 0)."""
    vectors = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    if not norms.all():
        return 0.0
    return float(vectors[0] @ vectors[1] / (norms[0] * norms[1]))
