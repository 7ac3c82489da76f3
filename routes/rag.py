"""`RagRoute`: retrieve passages for the latest question → build the augmented messages → delegate to a chat route.

It answers the Responses API too: the passages then lead the request's `instructions` (`routes.prompting`),
and the sources are added to the `Response` (to the `response.created` event of a stream).

Composition: the RAG route owns no upstream. It searches its `Retriever` for the conversation's last
user message, puts the passages that fit its token budget ahead of the conversation
(`routes.prompting`), and hands the rewritten request to the chat route it answers with (any `Route`,
e.g. the cheap fine-tuned model), streaming or not.

The sources reach the client twice, without breaking strict OpenAI parsing:

- the `x-turnout-sources` response header: the passages' `source#heading`, percent-encoded, comma-separated;
- a `turnout_sources` field added to the completion body (to the first chunk of a stream): a list of
  `{index, source, heading, position, similarity}`. The OpenAI SDKs keep unknown fields, even with
  strict response validation (`tests/e2e/test_rag.py`).

When retrieval finds no passage above the route's floor (`min_score`), no model is asked to answer from
nothing: the route takes its `no_context` action, either answering with a fixed text (the default) or
handing the request, as it came, to another route (`no_context: {route: frontier}`). Either way the response
says `x-turnout-rag: no-context` and carries an empty `turnout_sources` (which a cache hit shows again).

`cache_scope` and `model` are what a cache keys on besides the request: a cached answer is only valid
for the index it was retrieved from, the retrieval settings that chose its passages, and the model that
answered from them.

The route kind `rag`:

```yaml
routes:
  docs: {kind: rag, index: ./knowledge-index, answer_with: support-ft, top_k: 4, min_score: 0.2, context_tokens: 1500,
         no_context: {answer: "Our documents do not cover this."}}   # or {route: frontier}
```
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Annotated, Any
from urllib.parse import quote

import msgspec

from proxy.wire.errors import KnowledgeUnavailableError
from proxy.wire.schemas import Usage
from proxy.wire.sse import event_data
from routes import canned
from routes.base import Answer, AnswerStream, Call, Route
from routes.kind import BuildContext, CheckContext, RouteSettings
from routes.knowledge.embedding import EmbedderMismatchError
from routes.knowledge.index import KnowledgeIndex, KnowledgeIndexError
from routes.knowledge.retrieval import Passage, Retriever
from routes.prompting import build_rag_instructions, build_rag_messages

__all__ = [
    "NO_CONTEXT",
    "NO_CONTEXT_ANSWER",
    "RAG_HEADER",
    "SOURCES_FIELD",
    "SOURCES_HEADER",
    "NoContext",
    "RagRoute",
    "RagSettings",
    "Source",
    "sources_header",
]

SOURCES_HEADER = "x-turnout-sources"
SOURCES_FIELD = "turnout_sources"
RAG_HEADER = "x-turnout-rag"
NO_CONTEXT = "no-context"
"""`x-turnout-rag`'s value when retrieval found nothing above the floor and the `no_context` action answered."""
NO_CONTEXT_ANSWER = "I could not find this in the documents I can search, so I cannot answer it from them."
"""The default `no_context` answer."""


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """A passage the answer was given, as the client sees it."""

    index: int
    """Its number in the prompt ([1], [2], ...)."""
    source: str
    heading: str
    position: int
    similarity: float


def sources_header(sources: Sequence[Source]) -> str:
    """The `x-turnout-sources` value: each passage's `source#heading`, percent-encoded, comma-separated.

    A cache hit rebuilds it from the `turnout_sources` its stored answer carries (`proxy.endpoints`).
    """
    return ", ".join(quote(f"{s.source}#{s.heading}" if s.heading else s.source, safe="/#") for s in sources)


_MESSAGES = msgspec.json.Decoder(list[msgspec.Raw])
_TEXT = msgspec.json.Decoder(str | None)
_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
_INSTRUCTIONS = msgspec.json.Decoder(str | None)


def _with_field(body: bytes, value: bytes) -> bytes:
    """`body` (a JSON object) with the sources field added before its closing brace."""
    end = body.rstrip()
    if not end.endswith(b"}"):
        return body
    inner = end[:-1].rstrip()
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + b'"' + SOURCES_FIELD.encode() + b'":' + value + b"}"


def _with_field_in_first_event(events: bytes, value: bytes) -> bytes:
    """`events` with the sources field added to the first event's `data`, when it is one JSON line."""
    end = events.find(b"\n\n")
    if end < 0:
        return events
    first = events[:end]
    data = event_data(first)
    if data is None or b"\n" in data or not data.startswith(b"{"):
        return events
    lines = first[: first.find(b"data:")]  # an `event:` line before it (the Responses' typed events) is kept
    return lines + b"data: " + _with_field(data, value) + events[end:]


class NoContext(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a RAG route does when retrieval finds no passage above its floor: exactly one of the two."""

    route: str | None = None
    """Hand the request, as it came, to this route (one that answers itself)."""
    answer: str | None = None
    """Answer with this text; no model is called."""


class RagSettings(RouteSettings, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="rag"):
    """A RAG route: its knowledge index, the chat route that answers, and how much to retrieve."""

    index: str
    """The index directory (`turnout index add ... --index DIR`), relative to the policy file."""
    answer_with: str
    """The chat route that answers with the passages."""
    top_k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 4
    min_score: Annotated[float, msgspec.Meta(ge=-1, le=1)] = 0.0
    """Passages less similar to the question (cosine) are left out."""
    context_tokens: Annotated[int, msgspec.Meta(ge=50)] = 1500
    """Token budget for the passages."""
    no_context: NoContext = NoContext(answer=NO_CONTEXT_ANSWER)
    """When no passage is found above `min_score`: a fixed answer, or another route."""

    @property
    def answers_with(self) -> str:
        """The `answer_with` route."""
        return self.answer_with

    def check(self, name: str, context: CheckContext) -> KnowledgeIndex:
        """`answer_with` must be a route that answers itself; the index must exist and fit the embedder."""
        answering = [other for other, settings in context.routes.items() if settings.answers_with is None]
        if self.answer_with not in answering:
            known = ", ".join(answering)
            raise context.fail(("answer_with",), f"route '{name}': answer_with must be a chat route ({known})")
        action = self.no_context
        if (action.route is None) == (action.answer is None):
            raise context.fail(("no_context",), f"route '{name}': no_context takes one of `route` or `answer`")
        if action.route is not None and action.route not in answering:
            message = f"route '{name}': no_context's route must be a route that answers itself ({', '.join(answering)})"
            raise context.fail(("no_context", "route"), message)
        return context.load_index(self.index, ("index",))

    def build(self, name: str, context: BuildContext) -> RagRoute:
        """The route over its index's retriever, answering with the (already built) `answer_with` route."""
        action = self.no_context
        instead = context.routes[action.route] if action.route is not None else action.answer or NO_CONTEXT_ANSWER
        return RagRoute(
            name,
            context.retrievers[name],
            context.routes[self.answer_with],
            top_k=self.top_k,
            min_score=self.min_score,
            context_tokens=self.context_tokens,
            no_context=instead,
        )


class RagRoute:
    """Answers from a knowledge index: retrieval, then the `answer_with` chat route."""

    __slots__ = ("_budget", "_min_score", "_no_context", "_top_k", "answer_with", "name", "retriever")

    endpoints = frozenset({"chat", "responses"})

    def __init__(
        self,
        name: str,
        retriever: Retriever,
        answer_with: Route,
        *,
        top_k: int = 4,
        min_score: float = -1.0,
        context_tokens: int = 1500,
        no_context: Route | str = NO_CONTEXT_ANSWER,
    ) -> None:
        self.name = name
        self.retriever = retriever
        self.answer_with = answer_with
        self._top_k = top_k
        self._min_score = min_score
        self._budget = context_tokens
        self._no_context = no_context
        """With no passage found: the route to hand the call to, or the text to answer."""

    def __repr__(self) -> str:
        return f"RagRoute(name={self.name!r}, answer_with={self.answer_with.name!r}, index={self.cache_scope!r})"

    @property
    def cache_scope(self) -> str:
        """The knowledge index's version and the retrieval settings: what the passages given depend on."""
        return f"{self.retriever.version}/top_k={self._top_k}/min_score={self._min_score}/tokens={self._budget}"

    @property
    def model(self) -> str | None:
        """The model that answers from the passages: the `answer_with` route's (None: the caller's own)."""
        return self.answer_with.model

    async def retrieve(self, call: Call[Any]) -> list[Passage]:
        """The passages for the conversation's latest question (what embedding it cost goes on the call's bill).

        Raises:
            KnowledgeUnavailableError: the index cannot be searched (missing, or made by another embedder).
        """
        question = call.question
        try:
            found = await self.retriever.search(question.text, top_k=self._top_k, min_score=self._min_score)
        except (KnowledgeIndexError, EmbedderMismatchError) as exc:
            raise KnowledgeUnavailableError(f"The knowledge index of route '{self.name}' is unusable: {exc}") from exc
        question.charge(found.spent)
        return found.passages

    async def _augment(self, call: Call[Any]) -> tuple[Call[Any] | None, tuple[tuple[str, str], ...], bytes]:
        """The call to hand to the answering route, the headers it adds, and the encoded sources it carries.

        None for the call: no passage was found, and `no_context` says what to answer instead.
        """
        passages = await self.retrieve(call)
        if not passages:
            return None, ((RAG_HEADER, NO_CONTEXT),), b"[]"
        fields = call.body.fields
        if call.endpoint.kind == "responses":  # the passages lead the `instructions`; the input is left as it came
            given = _INSTRUCTIONS.decode(fields["instructions"]) if "instructions" in fields else None
            instructions, used = build_rag_instructions(given, passages, self._budget)
            body = call.body.replaced({"instructions": msgspec.Raw(msgspec.json.encode(instructions))})
        else:  # the conversation's messages as they came: only the `messages` member is rebuilt, the rest is copied
            conversation = _MESSAGES.decode(fields["messages"])
            messages, used = build_rag_messages(conversation, passages, self._budget)
            body = call.body.replaced({"messages": msgspec.Raw(msgspec.json.encode(messages))})
        sources = [
            Source(index=number, source=p.source, heading=p.heading, position=p.position, similarity=p.similarity)
            for number, p in enumerate(used, start=1)
        ]
        inner = Call(endpoint=call.endpoint, body=body, headers=call.headers, caller=call.caller)
        return inner, ((SOURCES_HEADER, sources_header(sources)),), msgspec.json.encode(sources)

    def _fixed(self, call: Call[Any], *, stream: bool) -> bytes:
        """The `no_context` text as the answer (or its stream), naming the model asked for; no sources."""
        fields = call.body.fields
        model = (_TEXT.decode(fields["model"]) if "model" in fields else None) or self.name
        instructions = _INSTRUCTIONS.decode(fields["instructions"]) if "instructions" in fields else None
        write = canned.events if stream else canned.answer
        return write(call.endpoint.kind, str(self._no_context), model, {SOURCES_FIELD: []}, instructions)

    def _answering(self, call: Call[Any], inner: Call[Any] | None) -> tuple[Route, Call[Any]]:
        """The route that answers and what it is asked: `answer_with` with the passages, or `no_context`'s route."""
        if inner is not None or isinstance(self._no_context, str):
            return self.answer_with, inner or call
        return self._no_context, call

    async def complete(self, call: Call[Any]) -> Answer:
        """Retrieve, then answer with `answer_with`; the body carries the sources, the headers name them."""
        inner, headers, sources = await self._augment(call)
        if inner is None and isinstance(self._no_context, str):
            return Answer(body=self._fixed(call, stream=False), model=None, usage=_NO_USAGE, headers=headers)
        route, asked = self._answering(call, inner)
        answer = await route.complete(asked)
        body = _with_field(answer.body, sources)
        return Answer(body=body, model=answer.model, usage=answer.usage, headers=(*answer.headers, *headers))

    async def stream(self, call: Call[Any]) -> AnswerStream:
        """Retrieve, then relay `answer_with`'s stream; its first chunk carries the sources."""
        inner, headers, sources = await self._augment(call)
        if inner is None and isinstance(self._no_context, str):
            return AnswerStream(events=_once(self._fixed(call, stream=True)), headers=headers)
        route, asked = self._answering(call, inner)
        opened = await route.stream(asked)
        return AnswerStream(events=_sourced(opened.events, sources), headers=(*opened.headers, *headers))


async def _once(events: bytes) -> AsyncGenerator[bytes, None]:
    yield events


async def _sourced(events: AsyncGenerator[bytes, None], sources: bytes) -> AsyncGenerator[bytes, None]:
    """`events` with the sources field added to the first chunk."""
    first = True
    async with contextlib.aclosing(events):
        async for item in events:
            if first:
                item, first = _with_field_in_first_event(item, sources), False
            yield item
