"""`check_training_file(lines)`: the checks of OpenAI's data-preparation guide for chat fine-tuning, and its numbers.

As the guide's notebook ("Data preparation and analysis for chat model fine-tuning", OpenAI cookbook) does:

- format errors by kind: `data_type` (a line is not an object), `missing_messages_list`,
  `message_missing_key` (no `role`, or neither `content` nor `tool_calls`), `message_unrecognized_key`,
  `unrecognized_role`, `missing_content` (content not a string, and no tool calls), and
  `example_missing_assistant_message`; this one adds `weight_not_0_or_1`, `weight_not_on_assistant`,
  `tool_message_without_id` and `tools_not_a_list`, which the API refuses too;
- warnings: examples without a system message, without a user message; fewer than `MIN_EXAMPLES` (10:
  the API refuses the file) or than `RECOMMENDED_EXAMPLES` (50, the low end of the guide's 50 to 100);
- the distributions of messages, tokens and trained assistant tokens per example (min, max, mean,
  median, 5th and 95th percentile), the examples over the base model's limit (truncated in training);
- the tokens billed (each example's tokens up to the limit), the guide's default epochs (3, raised so
  that examples x epochs reaches 100, lowered so that it stays under 25,000, within 1 to 25), and the
  estimated training cost: billed tokens x epochs x the base model's training price.

Tokens are counted as the guide counts them (3 per message, 1 per name, 3 for the reply, plus the text),
the texts with `policies.features.estimate_tokens` (cl100k_base's count, estimated without tiktoken,
whose files cannot be downloaded here: median error 1.9%); tool definitions and calls are counted as
their JSON text. So the figures are estimates, as the guide says its own are.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from policies.features import estimate_tokens

__all__ = [
    "MIN_EXAMPLES",
    "RECOMMENDED_EXAMPLES",
    "TRAINING_PRICES",
    "DataReport",
    "Distribution",
    "TrainingPrice",
    "check_training_file",
    "default_epochs",
    "training_price",
]

MIN_EXAMPLES = 10
"""The fewest examples OpenAI's fine-tuning API takes."""
RECOMMENDED_EXAMPLES = 50
"""The guide: "50 to 100 training examples" usually show a clear improvement."""

_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"})
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_LINE_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PER_MESSAGE, _PER_NAME, _PER_REPLY = 3, 1, 3
_TARGET_EPOCHS, _MIN_EPOCHS, _MAX_EPOCHS = 3, 1, 25
_MIN_TARGET, _MAX_TARGET = 100, 25_000
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class TrainingPrice:
    """A base model's supervised fine-tuning terms: USD per 1M training tokens, and the tokens an example may have."""

    per_1m: Decimal
    max_tokens: int


TRAINING_PRICES: Mapping[str, TrainingPrice] = {
    # OpenAI's pricing page (fine-tuning, supervised, standard), 2025-2026; the limit is the training context
    "gpt-4.1": TrainingPrice(Decimal("25.00"), 65_536),
    "gpt-4.1-mini": TrainingPrice(Decimal("5.00"), 65_536),
    "gpt-4.1-nano": TrainingPrice(Decimal("1.50"), 65_536),
    "gpt-4o": TrainingPrice(Decimal("25.00"), 65_536),
    "gpt-4o-mini": TrainingPrice(Decimal("3.00"), 65_536),
    "gpt-3.5-turbo": TrainingPrice(Decimal("8.00"), 16_385),
}
"""Base model (or its prefix: `gpt-4o-mini-2024-07-18` is `gpt-4o-mini`) → its training price and limit."""


def training_price(model: str) -> TrainingPrice | None:
    """The training terms of `model`: its entry, else the longest entry it starts with followed by `-`; None."""
    if model in TRAINING_PRICES:
        return TRAINING_PRICES[model]
    found = max((name for name in TRAINING_PRICES if model.startswith(f"{name}-")), key=len, default=None)
    return None if found is None else TRAINING_PRICES[found]


def default_epochs(examples: int) -> int:
    """The epochs OpenAI trains for by default on `examples` examples (the guide's rule; 0 examples: 3)."""
    if examples and examples * _TARGET_EPOCHS < _MIN_TARGET:
        return min(_MAX_EPOCHS, _MIN_TARGET // examples)
    if examples * _TARGET_EPOCHS > _MAX_TARGET:
        return max(_MIN_EPOCHS, _MAX_TARGET // examples)
    return _TARGET_EPOCHS


@dataclass(frozen=True, slots=True)
class Distribution:
    """Min, max, mean, median and the 5th and 95th percentiles of a count per example."""

    low: int
    high: int
    mean: float
    median: float
    p5: float
    p95: float

    @classmethod
    def of(cls, values: Sequence[int]) -> Distribution:
        """The distribution of `values` (all zero when there are none)."""
        if not values:
            return cls(0, 0, 0.0, 0.0, 0.0, 0.0)
        if len(values) == 1:
            only = float(values[0])
            return cls(values[0], values[0], only, only, only, only)
        cuts = statistics.quantiles(values, n=20, method="inclusive")
        return cls(min(values), max(values), statistics.fmean(values), statistics.median(values), cuts[0], cuts[-1])

    def render(self) -> str:
        """One line: `min 1, max 9, mean 3.2, median 3, p5 1.0, p95 8.6`."""
        return (
            f"min {self.low}, max {self.high}, mean {self.mean:.1f}, median {self.median:g}, "
            f"p5 {self.p5:.1f}, p95 {self.p95:.1f}"
        )


@dataclass(frozen=True, slots=True)
class DataReport:
    """What the checks found in a training file, and what training it would cost."""

    examples: int
    format_errors: Mapping[str, int]
    missing_system: int
    missing_user: int
    messages: Distribution
    tokens: Distribution
    assistant_tokens: Distribution
    over_limit: int
    max_tokens: int
    billed_tokens: int
    epochs: int
    base_model: str
    cost: Decimal | None
    """None: no training price is known for the base model."""

    @property
    def ok(self) -> bool:
        """No format error, and at least `MIN_EXAMPLES` examples."""
        return not self.format_errors and self.examples >= MIN_EXAMPLES

    def render(self) -> list[str]:
        """The report as lines of text, as the guide prints it."""
        lines = [f"examples: {self.examples}"]
        if self.format_errors:
            lines.append("format errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.format_errors.items())))
        else:
            lines.append("format errors: none")
        if self.examples < MIN_EXAMPLES:
            lines.append(f"warning: fewer than {MIN_EXAMPLES} examples: OpenAI refuses the file")
        elif self.examples < RECOMMENDED_EXAMPLES:
            lines.append(f"warning: fewer than {RECOMMENDED_EXAMPLES} examples (OpenAI suggests 50 to 100)")
        lines.append(f"examples without a system message: {self.missing_system}")
        lines.append(f"examples without a user message: {self.missing_user}")
        lines.append(f"messages per example: {self.messages.render()}")
        lines.append(f"tokens per example (estimated): {self.tokens.render()}")
        lines.append(f"trained assistant tokens per example: {self.assistant_tokens.render()}")
        lines.append(f"examples over the {self.max_tokens}-token limit (truncated): {self.over_limit}")
        lines.append(f"billed tokens: {self.billed_tokens} per epoch, {self.billed_tokens * self.epochs} in all")
        if self.cost is None:
            cost = "unknown (no training price for the model: --training-price)"
        else:
            cost = f"${self.cost:.4f} (${self.cost / max(self.epochs, 1):.4f} an epoch)"
        lines.append(f"estimated training cost on {self.base_model}, {self.epochs} epochs: {cost}")
        return lines


def check_training_file(
    lines: Sequence[object],
    *,
    base_model: str,
    epochs: int | None = None,
    price_per_1m: Decimal | None = None,
) -> DataReport:
    """The guide's checks and figures for `lines` (the file's lines, decoded), trained on `base_model`."""
    terms = training_price(base_model)
    limit = terms.max_tokens if terms is not None else 65_536
    errors: Counter[str] = Counter()
    counts: list[tuple[int, int, int]] = []  # messages, tokens, trained assistant tokens
    missing_system = missing_user = 0
    for line in lines:
        if not _format_errors(line, errors):
            continue
        assert isinstance(line, Mapping)  # noqa: S101 - `_format_errors` said so
        messages = line["messages"]
        missing_system += not any(m.get("role") == "system" for m in messages)
        missing_user += not any(m.get("role") == "user" for m in messages)
        counts.append((len(messages), _tokens(line), _assistant_tokens(messages)))
    tokens = [total for _, total, _ in counts]
    billed = sum(min(limit, total) for total in tokens)
    chosen = epochs if epochs is not None else default_epochs(len(lines))
    rate = price_per_1m if price_per_1m is not None else terms.per_1m if terms is not None else None
    return DataReport(
        examples=len(lines),
        format_errors=dict(errors),
        missing_system=missing_system,
        missing_user=missing_user,
        messages=Distribution.of([n for n, _, _ in counts]),
        tokens=Distribution.of(tokens),
        assistant_tokens=Distribution.of([a for _, _, a in counts]),
        over_limit=sum(total > limit for total in tokens),
        max_tokens=limit,
        billed_tokens=billed,
        epochs=chosen,
        base_model=base_model,
        cost=None if rate is None else rate * billed * chosen / _MILLION,
    )


def _format_errors(line: object, errors: Counter[str]) -> bool:
    """Count `line`'s format errors into `errors`; whether its messages can be counted (a list of objects)."""
    if not isinstance(line, Mapping):
        errors["data_type"] += 1
        return False
    messages = line.get("messages")
    if not messages or not isinstance(messages, list):
        errors["missing_messages_list"] += 1
        return False
    if any(key not in _LINE_KEYS for key in line):
        errors["message_unrecognized_key"] += 1
    if "tools" in line and not isinstance(line["tools"], list):
        errors["tools_not_a_list"] += 1
    if not all(isinstance(message, Mapping) for message in messages):
        errors["data_type"] += 1
        return False
    for message in messages:
        _message_errors(message, errors)
    if not any(message.get("role") == "assistant" for message in messages):
        errors["example_missing_assistant_message"] += 1
    return True


def _message_errors(message: Mapping[str, Any], errors: Counter[str]) -> None:
    role, content, calls = message.get("role"), message.get("content"), message.get("tool_calls")
    if "role" not in message or ("content" not in message and not calls):
        errors["message_missing_key"] += 1
    if any(key not in _KEYS for key in message):
        errors["message_unrecognized_key"] += 1
    if role not in _ROLES:
        errors["unrecognized_role"] += 1
    if not calls and not message.get("function_call") and (not content or not isinstance(content, str)):
        errors["missing_content"] += 1
    if "weight" in message:
        if role != "assistant":
            errors["weight_not_on_assistant"] += 1
        elif message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
            errors["weight_not_0_or_1"] += 1
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        errors["tool_message_without_id"] += 1


def _text_tokens(value: object) -> int:
    if isinstance(value, str):
        return estimate_tokens(value)
    if value is None:
        return 0
    return estimate_tokens(json.dumps(value, separators=(",", ":")))


def _tokens(line: Mapping[str, Any]) -> int:
    """The example's tokens as the guide counts them: per message, its values, 1 per name; 3 for the reply."""
    total = _PER_REPLY + _text_tokens(line.get("tools"))
    for message in line["messages"]:
        total += _PER_MESSAGE
        for key in ("role", "content", "tool_calls", "tool_call_id"):
            total += _text_tokens(message.get(key))
        if message.get("name"):
            total += _text_tokens(message["name"]) + _PER_NAME
    return total


def _assistant_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """The tokens trained on: the assistant messages' content and tool calls, but those of weight 0."""
    return sum(
        _text_tokens(m.get("content")) + _text_tokens(m.get("tool_calls"))
        for m in messages
        if m.get("role") == "assistant" and m.get("weight", 1) != 0
    )
