"""The semantic cache's guard: questions that differ by a negation, a number or a negating prefix never agree."""

from __future__ import annotations

import numpy as np
import pytest

from policies import extract_features
from proxy.cache.semantic import agree, best_match, pack, signature
from proxy.endpoints.chat import CHAT


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "How can I reset my password?"),
        ("I don't have an account", "I do not have an account"),
        ("Price for 1,000 seats", "price for 1000 seats?"),
        ("Tell me about SSO.", "Can you tell me about SSO?"),
    ],
)
def test_paraphrases_agree(a: str, b: str) -> None:
    assert agree(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Which plans include SSO?", "Which plans do not include SSO?"),
        ("Which plans include SSO?", "Which plans don't include SSO?"),
        ("Plans with SSO", "Plans without SSO"),
        ("Give me 3 tips", "Give me 5 tips"),
        ("Give me three tips", "Give me five tips"),
        ("Is it more expensive?", "Is it less expensive?"),
        ("What happened before 1990?", "What happened after 1990?"),
        ("Is the API available?", "Is the API unavailable?"),
        ("What are the advantages?", "What are the disadvantages?"),
        ("Is this legal?", "Is this illegal?"),
    ],
)
def test_contradictions_do_not_agree(a: str, b: str) -> None:
    assert not agree(a, b)


def test_signature_reads_contractions_as_not() -> None:
    assert signature("I can't log in") == signature("I cannot log in") == signature("I can not log in")


def unit(*values: float) -> np.ndarray:
    row = np.asarray(values, dtype=np.float32)
    return row / np.linalg.norm(row)


def test_best_match_takes_the_closest_that_agrees_above_the_threshold() -> None:
    records = [
        pack("k-near", "Is the API available?", unit(1, 0.1)),
        pack("k-closest-but-negated", "Is the API unavailable?", unit(1, 0.01)),
        pack("k-far", "Is the API available?", unit(0, 1)),
    ]
    match = best_match("Is the API available?", unit(1, 0), records, 0.9)
    assert match is not None
    assert match.key == "k-near"
    assert best_match("Is the API available?", unit(1, 0), records, 0.999) is None
    assert best_match("Is the API available?", unit(1, 0), [b"garbage", *records[1:]], 0.9) is None
    deep = b"\x95\xa1k\xa1s\xc4\x01x\xa1w" + b"\x91" * 100_000 + b"\x90"  # a record nesting past the stack
    match = best_match("Is the API available?", unit(1, 0), [deep, *records], 0.9)
    assert match is not None
    assert match.key == "k-near"


def test_the_question_is_the_last_user_message_and_its_context_what_came_before() -> None:
    body = CHAT.decode(
        b'{"model":"m","messages":[{"role":"system","content":"x"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}'
    )
    assert CHAT.question(body) == "a\nb" == extract_features(body.view, {}, None).last_user_text  # one reading
    context = CHAT.cache_context(body)
    assert context is not None
    assert bytes(context["messages"]) == b'[{"role":"system","content":"x"}]'
    assistant_last = CHAT.decode(b'{"model":"m","messages":[{"role":"assistant","content":"x"}]}')
    assert CHAT.cache_context(assistant_last) is None
