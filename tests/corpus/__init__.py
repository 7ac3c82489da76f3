"""The usage corpus (`usage.yaml`): OpenAI usage objects with their cost computed by hand, and its reader.

`arithmetic()` evaluates an entry's hand computation in exact decimals (numbers, + - * / and parentheses only),
so that the stated cost, the written arithmetic and Turnout's price table are three checks of one another.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import yaml

from proxy.wire.schemas import Usage

__all__ = ["CORPUS", "Entry", "arithmetic", "load"]

PATH = Path(__file__).with_name("usage.yaml")
_OPERATORS: dict[type[ast.operator], Callable[[Decimal, Decimal], Decimal]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One corpus entry."""

    id: str
    endpoint: str
    model: str
    usage: dict[str, Any]
    """The usage object as the API reports it (chat's, the Responses API's or an embedding's shape)."""
    arithmetic: str
    cost: Decimal
    service_tier: str | None = None
    baseline_gpt4: Decimal | None = None
    baseline_arithmetic: str | None = None

    @property
    def tier(self) -> str:
        """The tier the entry is billed at (`batch` for the Batch API's lines)."""
        return "batch" if self.endpoint == "batch" else self.service_tier or "standard"

    def as_usage(self) -> Usage:
        """The usage in Turnout's terms (the Responses API's `input_tokens` read as chat's `prompt_tokens`)."""
        if self.endpoint != "responses":
            return msgspec.convert(self.usage, Usage)
        given, made = self.usage.get("input_tokens_details") or {}, self.usage.get("output_tokens_details") or {}
        return msgspec.convert(
            {
                "prompt_tokens": self.usage["input_tokens"],
                "completion_tokens": self.usage["output_tokens"],
                "total_tokens": self.usage["total_tokens"],
                "prompt_tokens_details": given,
                "completion_tokens_details": made,
            },
            Usage,
        )


def arithmetic(text: str) -> Decimal:
    """`text` (numbers, + - * /, parentheses) evaluated in decimals, each number read as it is written."""

    def value(node: ast.AST) -> Decimal:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return Decimal(ast.get_source_segment(text, node) or str(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")

    return value(ast.parse(text.strip(), mode="eval"))


def load(path: Path = PATH) -> list[Entry]:
    """The corpus's entries, in file order."""
    entries = []
    for raw in yaml.safe_load(path.read_text(encoding="utf-8")):
        baseline = raw.get("baseline_gpt4") or {}
        entries.append(
            Entry(
                id=raw["id"],
                endpoint=raw["endpoint"],
                model=raw["model"],
                usage=raw["usage"],
                arithmetic=str(raw["arithmetic"]),
                cost=Decimal(raw["cost"]),
                service_tier=raw.get("service_tier"),
                baseline_gpt4=Decimal(baseline["usd"]) if baseline else None,
                baseline_arithmetic=str(baseline["arithmetic"]) if baseline else None,
            )
        )
    return entries


CORPUS = load()
