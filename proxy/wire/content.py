"""`Content`: what the access log shows of a request and its answer (`--log-content`), as its endpoint reads them.

Each endpoint kind's codec is a `ContentReader`: chat shows its messages and each choice's text, the Responses
API its instructions and input messages and each output message's text, legacy completions their `prompt` and
each choice's text, embeddings their `input` (an embedding is no text). The access log asks the reader only
when content is turned on, so a request pays for none of it otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

from proxy.wire.answers import UnreadableAnswerError, read_answer
from proxy.wire.endpoint import Body, ViewT
from proxy.wire.schemas import ChatMessage

__all__ = ["Content", "ContentReader", "answer_texts"]

T = TypeVar("T")


class Content(msgspec.Struct, frozen=True, kw_only=True):
    """A request's and its answer's content, as the access log line carries it."""

    messages: list[ChatMessage] | None = None
    """A conversation's messages (chat's; a Responses request's instructions, then its input's messages)."""
    input: msgspec.Raw | None = None
    """A text endpoint's input as it was sent (a completion's `prompt`, an embedding's `input`)."""
    answer: list[str | None] | None = None
    """A non-streamed answer's text, one per choice (or per Responses output message); None without one."""


class ContentReader(Protocol[ViewT]):
    """Reads an endpoint kind's requests and answers for the access log (each codec is one)."""

    def content(self, body: Body[ViewT], answer: bytes | None) -> Content:
        """What the access log shows of `body` and its non-streamed `answer` (None: streamed, or no answer)."""
        ...


def answer_texts(
    answer: bytes | None, shape: type[T], texts: Callable[[T], list[str | None]]
) -> list[str | None] | None:
    """The texts `texts` reads from `answer` as `shape`; None without an answer or when it does not read.

    An answer the route or the cache let through always reads: this is a last guard, not a check.
    """
    if answer is None:
        return None
    try:
        _, view = read_answer(answer, shape)
    except UnreadableAnswerError:
        return None
    return texts(view)
