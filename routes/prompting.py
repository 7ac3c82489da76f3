"""Pure functions that build the RAG route's messages: the instruction, the numbered passages, the conversation.

For the Responses API the same instruction and passages become the request's `instructions`, ahead of the
client's own (`build_rag_instructions`).

The passages go into one system message ahead of the conversation, numbered, each with its source and
heading, as many as fit the token budget in rank order (the first is shortened to fit when it alone
does not). The instruction tells the model to answer only from them, to cite them by number, and to say
so when they do not contain the answer. The conversation follows unchanged, the client's own system
message included.

Tokens are estimated at four characters each: the budget bounds the prompt, it does not bill it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from routes.knowledge.retrieval import Passage

__all__ = [
    "INSTRUCTION",
    "NO_PASSAGES",
    "build_rag_instructions",
    "build_rag_messages",
    "estimate_tokens",
    "fit_passages",
]

INSTRUCTION = (
    "Answer the user's question using only the numbered passages below, which come from the team's own "
    "documents. Cite the passages you use by their number, like [1]. If the passages do not contain the "
    "answer, say that the documents do not cover it; do not answer from general knowledge."
)
NO_PASSAGES = "(No passage of the documents matches this question.)"


def estimate_tokens(text: str) -> int:
    """A rough token count: four characters a token."""
    return (len(text) + 3) // 4


def _render(number: int, passage: Passage, text: str) -> str:
    where = f"{passage.source} - {passage.heading}" if passage.heading else passage.source
    return f"[{number}] ({where})\n{text}"


def fit_passages(passages: Sequence[Passage], budget: int) -> list[tuple[Passage, str]]:
    """The passages that fit `budget` tokens in order, rendered; the first one shortened when it alone is larger."""
    fitted: list[tuple[Passage, str]] = []
    used = 0
    for passage in passages:
        rendered = _render(len(fitted) + 1, passage, passage.text)
        cost = estimate_tokens(rendered) + 1
        if used + cost > budget:
            if fitted:
                break
            words = passage.text.split()
            while words and estimate_tokens(_render(1, passage, " ".join(words))) + 1 > budget:
                words = words[: len(words) * 3 // 4]
            if not words:
                break
            rendered, cost = _render(1, passage, " ".join(words) + " ..."), budget
        fitted.append((passage, rendered))
        used += cost
    return fitted


def build_rag_messages(
    messages: Sequence[Any], passages: Sequence[Passage], budget: int
) -> tuple[list[Any], list[Passage]]:
    """The messages to send: the instruction with the passages that fit `budget`, then `messages` unchanged.

    `messages` are the request's messages as the client sent them (JSON values). Returns the new list and
    the passages it carries, in their numbered order.
    """
    text, used = _instruction(passages, budget)
    return [{"role": "system", "content": text}, *messages], used


def _instruction(passages: Sequence[Passage], budget: int) -> tuple[str, list[Passage]]:
    """The instruction with the passages that fit `budget`, and those passages."""
    fitted = fit_passages(passages, budget)
    context = "\n\n".join(rendered for _, rendered in fitted) if fitted else NO_PASSAGES
    return f"{INSTRUCTION}\n\nPassages:\n\n{context}", [passage for passage, _ in fitted]


def build_rag_instructions(
    instructions: str | None, passages: Sequence[Passage], budget: int
) -> tuple[str, list[Passage]]:
    """A Responses request's `instructions`: the instruction with the passages, then the client's own (if any).

    The Responses API's system message is its `instructions`; the input is left as it came.
    """
    text, used = _instruction(passages, budget)
    return (f"{text}\n\n{instructions}" if instructions else text), used
