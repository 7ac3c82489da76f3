"""A RAG answer's citations through the cache: the `turnout_sources` a stored answer carries, in either form.

A RAG route adds its sources to the answer it gives (`routes.rag`): the `turnout_sources` field of a
completion or a `Response`, of a stream's first chunk or its `response.created` event, and the
`x-turnout-sources` header naming them. The cache stores the answer, not the headers, so a hit finds the
sources in the stored answer and rebuilds the header from them (`headers_of`); replayed in the other form,
the field moves with them (a completion's to the first chunk of its stream, a stream's first chunk's
to the completion it assembles into), as a live answer of that form would have carried it. An answer
the route gave with no passage found (`no_context`) carries empty sources, and its hit says
`x-turnout-rag: no-context` again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from proxy.wire.answers import UnreadableAnswerError
from routes.rag import NO_CONTEXT, RAG_HEADER, SOURCES_FIELD, SOURCES_HEADER, Source, sources_header

__all__ = ["SOURCES_FIELD", "first_sources", "headers_of"]


def first_sources(items: Iterable[Mapping[str, Any]]) -> Any:
    """The `turnout_sources` of the first of `items` that has one (None: none has)."""
    return next((item[SOURCES_FIELD] for item in items if item.get(SOURCES_FIELD) is not None), None)


def headers_of(sources: Any) -> tuple[tuple[str, str], ...]:
    """The headers a RAG route sent with an answer that carries `sources` (none for None).

    Empty sources are a `no_context` answer's: `x-turnout-rag: no-context`, as it was sent live.

    Raises:
        UnreadableAnswerError: `sources` is not a list of sources (not an entry a RAG route stored).
    """
    if sources is None:
        return ()
    try:
        read = msgspec.convert(sources, list[Source])
    except msgspec.ValidationError as exc:
        raise UnreadableAnswerError(f"its {SOURCES_FIELD} do not read ({exc})") from None
    if not read:
        return ((RAG_HEADER, NO_CONTEXT),)
    return ((SOURCES_HEADER, sources_header(read)),)
