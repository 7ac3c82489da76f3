"""The regex prefilter: skipping a regex when its required literals are absent never changes a decision."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from policies import RequestFeatures, load_policy
from policies.text import required_literals
from proxy.wire.schemas import ChatMessage


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"```|\bdef |\bclass |\bSELECT\b", ("```", "def ", "class ", "SELECT")),
        (r"abc?d", ("ab",)),
        (r"a+b", ("b",)),
        (r"(?:x|y)z", ("z",)),
        (r"ref(und|und)s", ("ref",)),
        (r"(?i)refund", None),  # case-insensitive: no shortcut
        (r"\d+", None),
        (r"x|\d", None),  # one alternative has no literal
        (r"(?i:ab)c", ("c",)),  # a scoped flag stays inside its group
    ],
)
def test_required_literals(pattern: str, literals: tuple[str, ...] | None) -> None:
    assert required_literals(pattern) == literals


PATTERNS = [
    r"```|\bdef |\bclass |\bSELECT\b",
    r"order\s*#?\d{4,}",
    r"abc?d",
    r"(?:refund|chargeback)s?",
    r"\bcancel\b.*\baccount\b",
    r"[Ee]rror: \w+",
    r"(?i)invoice",
    r"x|\d",
]
TEXTS = [
    "",
    "Where is my order #48213?",
    "please cancel my account",
    "def main():\n    pass",
    "select * from t",
    "SELECT * FROM t",
    "abd abcd",
    "I want refunds",
    "Error: timeout",
    "INVOICE 7",
    "Café ☕ ünïcödé text without any of them",
]


def routed(pattern: str, text: str) -> bool:
    rules = [{"name": "r", "when": {"conversation": {"regex": pattern}}, "route": "a"}, {"name": "d", "route": "b"}]
    engine = load_policy(rules, ["a", "b"], locate=lambda where: "test:1")
    messages: Sequence[ChatMessage] = [ChatMessage(role="user", content=text)]
    return engine.decide(RequestFeatures(model="m", messages=messages)).route == "a"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_rule_matches_exactly_when_the_regex_does(pattern: str) -> None:
    for text in TEXTS:
        assert routed(pattern, text) == (re.search(pattern, text) is not None), (pattern, text)
