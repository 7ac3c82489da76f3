"""The RAG route's prompt building and composition, with a static retriever and a recording chat route."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import msgspec
import pytest

from proxy.endpoints.chat import CHAT
from proxy.wire.errors import KnowledgeUnavailableError, UpstreamError
from proxy.wire.schemas import Usage
from routes.base import Answer, AnswerStream, Call, ChatCall
from routes.knowledge.embedding import EmbedderMismatchError, Spent
from routes.knowledge.index import KnowledgeIndexError
from routes.knowledge.retrieval import Passage, Retrieved
from routes.prompting import INSTRUCTION, NO_PASSAGES, build_rag_messages, estimate_tokens
from routes.rag import RAG_HEADER, SOURCES_FIELD, SOURCES_HEADER, RagRoute
from tests.unit.test_pipeline import FakeRoute, pipeline, with_fallback

REFUNDS = Passage("kb/billing.md", "Billing > Refunds", 3, "Refunds are paid back within 30 days.", 0.9, 0.61)
HOURS = Passage("kb/hours.txt", "", 0, "Support is open from 8 to 18.", 0.5, 0.32)


@dataclass
class StaticRetriever:
    """Returns fixed passages (or raises), and records the queries."""

    passages: list[Passage]
    version: str = "v1"
    error: Exception | None = None
    queries: list[tuple[str, int, float]] = field(default_factory=list)

    async def search(self, query: str, *, top_k: int, min_score: float = -1.0) -> Retrieved:
        self.queries.append((query, top_k, min_score))
        if self.error is not None:
            raise self.error
        return Retrieved(self.passages[:top_k], Spent("text-embedding-3-small", 7))


@dataclass
class RecordingRoute:
    """A chat route that records what it was handed and answers like an upstream."""

    name: str = "support-ft"
    model: str | None = None
    calls: list[ChatCall] = field(default_factory=list)
    cache_scope: str = ""
    endpoints: frozenset[str] = frozenset({"chat"})

    async def complete(self, call: ChatCall) -> Answer:
        self.calls.append(call)
        body = b'{"id":"chatcmpl-1","object":"chat.completion","model":"ft","choices":[]}\n'
        return Answer(body=body, model="ft", usage=None)

    async def stream(self, call: ChatCall) -> AnswerStream:
        self.calls.append(call)
        return AnswerStream(events=self._events())

    async def _events(self) -> AsyncGenerator[bytes, None]:
        first = b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
        yield first + b'data: {"id":"c","choices":[]}\n\n'
        yield b'data: {"id":"c","choices":[]}\n\ndata: [DONE]\n\n'


def chat_call(question: str = "How do refunds work?", **extra: object) -> ChatCall:
    body = {
        "model": "gpt-4o",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are Acme's assistant."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": question}]},
        ],
        **extra,
    }
    raw = msgspec.json.encode(body)
    return Call(endpoint=CHAT, body=CHAT.decode(raw), headers={"x-request-id": "req_1"})


def test_the_messages_are_the_instruction_the_numbered_passages_then_the_conversation() -> None:
    conversation = [{"role": "user", "content": "How do refunds work?"}]
    messages, used = build_rag_messages(conversation, [REFUNDS, HOURS], budget=500)
    assert used == [REFUNDS, HOURS]
    assert messages[1:] == conversation
    system = messages[0]["content"]
    assert system.startswith(INSTRUCTION)
    assert "say that the documents do not cover it" in system
    assert "[1] (kb/billing.md - Billing > Refunds)\nRefunds are paid back within 30 days." in system
    assert "[2] (kb/hours.txt)\nSupport is open from 8 to 18." in system


def test_passages_stop_at_the_token_budget() -> None:
    long = Passage("kb/long.md", "Long", 0, " ".join(["word"] * 400), 1.0, 0.9)
    messages, used = build_rag_messages([], [REFUNDS, long, HOURS], budget=30)
    assert used == [REFUNDS]  # the second does not fit, and nothing after it is taken
    _, used = build_rag_messages([], [long], budget=60)
    (passage,) = used
    assert passage is long
    text = build_rag_messages([], [long], budget=60)[0][0]["content"]
    assert text.endswith(" ...")
    assert estimate_tokens(text.split("Passages:\n\n", 1)[1]) <= 60
    messages, used = build_rag_messages([], [], budget=100)
    assert used == []
    assert messages[0]["content"].endswith(NO_PASSAGES)


async def test_complete_retrieves_for_the_last_question_and_adds_the_sources() -> None:
    retriever, inner = StaticRetriever([REFUNDS, HOURS]), RecordingRoute()
    route = RagRoute("docs", retriever, inner, top_k=2, min_score=0.1, context_tokens=500)
    call = chat_call()
    completion = await route.complete(call)
    assert retriever.queries == [("How do refunds work?", 2, 0.1)]
    (handed,) = inner.calls
    sent = json.loads(handed.raw)
    assert sent["temperature"] == 0.2  # the rest of the body is kept
    assert [m["role"] for m in sent["messages"]] == ["system", "system", "user", "assistant", "user"]
    assert "[1] (kb/billing.md - Billing > Refunds)" in sent["messages"][0]["content"]
    assert sent["messages"][1:] == json.loads(call.raw)["messages"]
    body = json.loads(completion.body)
    assert body["model"] == "ft"
    assert body[SOURCES_FIELD] == [
        {"index": 1, "source": "kb/billing.md", "heading": "Billing > Refunds", "position": 3, "similarity": 0.61},
        {"index": 2, "source": "kb/hours.txt", "heading": "", "position": 0, "similarity": 0.32},
    ]
    assert completion.headers == ((SOURCES_HEADER, "kb/billing.md#Billing%20%3E%20Refunds, kb/hours.txt"),)
    assert route.cache_scope.startswith("v1/")  # the index's version, then the retrieval settings
    assert call.question.spent == [Spent("text-embedding-3-small", 7)]  # the retrieval's, on the call's bill


async def test_a_stream_carries_the_sources_in_its_first_chunk_only() -> None:
    route = RagRoute("docs", StaticRetriever([REFUNDS]), RecordingRoute())
    call = chat_call(stream=True)
    opened = await route.stream(call)
    items = [item async for item in opened.events]
    first_event = items[0].split(b"\n\n")[0]
    assert json.loads(first_event.removeprefix(b"data: "))[SOURCES_FIELD][0]["source"] == "kb/billing.md"
    assert SOURCES_FIELD.encode() not in items[0].split(b"\n\n", 1)[1]
    assert SOURCES_FIELD.encode() not in items[1]
    assert items[1].endswith(b"data: [DONE]\n\n")
    assert dict(opened.headers)[SOURCES_HEADER] == "kb/billing.md#Billing%20%3E%20Refunds"


async def test_no_passage_is_no_paid_call_but_the_fixed_answer_in_every_form() -> None:
    inner = RecordingRoute()
    route = RagRoute("docs", StaticRetriever([]), inner, no_context="Not in our documents.")
    completion = await route.complete(chat_call())
    body = json.loads(completion.body)
    assert inner.calls == []
    assert (body["object"], body["model"], body["choices"][0]["message"]["content"]) == (
        "chat.completion",
        "gpt-4o",
        "Not in our documents.",
    )
    assert body[SOURCES_FIELD] == []
    assert completion.headers == ((RAG_HEADER, "no-context"),)
    assert (completion.model, completion.usage) == (None, Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0))
    opened = await route.stream(chat_call(stream=True))
    events = b"".join([item async for item in opened.events])
    chunks = [json.loads(line[6:]) for line in events.split(b"\n\n") if line.startswith(b"data: {")]
    assert chunks[0][SOURCES_FIELD] == []
    assert all(SOURCES_FIELD not in chunk for chunk in chunks[1:])
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == (
        "Not in our documents."
    )
    assert events.endswith(b"data: [DONE]\n\n")
    assert opened.headers == ((RAG_HEADER, "no-context"),)
    assert inner.calls == []


async def test_no_passage_hands_the_call_as_it_came_to_the_no_context_route() -> None:
    inner, other = RecordingRoute(), RecordingRoute(name="gpt4")
    route = RagRoute("docs", StaticRetriever([]), inner, no_context=other)
    call = chat_call()
    completion = await route.complete(call)
    assert inner.calls == []
    assert other.calls[0].raw == call.raw  # no passages, no RAG instruction
    assert json.loads(completion.body)[SOURCES_FIELD] == []
    assert completion.headers == ((RAG_HEADER, "no-context"),)
    opened = await route.stream(chat_call(stream=True))
    first = await anext(opened.events)
    await opened.events.aclose()
    assert b'"turnout_sources":[]' in first.split(b"\n\n")[0]
    assert len(other.calls) == 2
    assert opened.headers == ((RAG_HEADER, "no-context"),)


@pytest.mark.parametrize(
    "error",
    [
        KnowledgeIndexError("no knowledge index in /srv/kb"),
        EmbedderMismatchError("the vectors were made by a (1 dimensions), not by b (2 dimensions)"),
    ],
)
async def test_an_unusable_index_is_a_clear_openai_error(error: Exception) -> None:
    route = RagRoute("docs", StaticRetriever([], error=error), RecordingRoute())
    with pytest.raises(KnowledgeUnavailableError) as caught:
        await route.complete(chat_call())
    assert caught.value.status == 503
    body = json.loads(caught.value.body())["error"]
    assert body["code"] == "knowledge_index_unavailable"
    assert body["message"].startswith("The knowledge index of route 'docs' is unusable: ")
    assert set(body) == {"message", "type", "param", "code"}


async def test_the_sources_header_comes_only_from_the_route_that_answered() -> None:
    class FailingChat(RecordingRoute):
        async def complete(self, call: ChatCall) -> Answer:
            raise UpstreamError("the fine-tuned model is down")

    rag = RagRoute("docs", StaticRetriever([REFUNDS]), FailingChat())
    chat = with_fallback(pipeline(rag, FakeRoute("gpt4"), attempts=0), "docs", "gpt4")  # type: ignore[arg-type]  # pipeline() types its fakes
    _, outcome = await chat.complete(CHAT, chat_call())
    assert outcome.route == "gpt4"
    assert SOURCES_HEADER not in dict(outcome.header_items())

    only_rag = RagRoute("docs", StaticRetriever([REFUNDS]), RecordingRoute())
    answered = with_fallback(pipeline(only_rag), "docs")  # type: ignore[arg-type]  # pipeline() types its fakes
    _, outcome = await answered.complete(CHAT, chat_call())
    assert dict(outcome.header_items())[SOURCES_HEADER] == "kb/billing.md#Billing%20%3E%20Refunds"
    relay, outcome = await answered.stream(CHAT, chat_call(stream=True))
    await relay.aclose()
    assert SOURCES_HEADER in dict(outcome.header_items())


def test_what_a_cache_keys_on_changes_with_the_index_the_settings_and_the_answering_model() -> None:
    retriever, inner = StaticRetriever([REFUNDS]), RecordingRoute()
    route = RagRoute("docs", retriever, inner, top_k=2, min_score=0.1, context_tokens=500)
    versions = {
        route.cache_scope,
        RagRoute("docs", retriever, inner, top_k=3, min_score=0.1, context_tokens=500).cache_scope,
        RagRoute("docs", retriever, inner, top_k=2, min_score=0.2, context_tokens=500).cache_scope,
        RagRoute("docs", retriever, inner, top_k=2, min_score=0.1, context_tokens=900).cache_scope,
        RagRoute("docs", StaticRetriever([REFUNDS], version="v2"), inner, top_k=2, min_score=0.1).cache_scope,
    }
    assert len(versions) == 5
    assert route.model is None  # this inner route answers with the caller's model
    inner.model = "ft:gpt-3.5-turbo-0613:acme::8Xyz"  # a chat route's model
    assert route.model == "ft:gpt-3.5-turbo-0613:acme::8Xyz"
