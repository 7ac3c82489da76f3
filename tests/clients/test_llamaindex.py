"""LlamaIndex against Turnout: `OpenAILike` in its default completion mode (`/v1/completions`) and in chat mode,
streamed and not, and `OpenAIEmbedding`.

`OpenAILike` is what LlamaIndex's docs give for "an OpenAI-compatible server": its default is `is_chat_model=False`,
so a team that only sets `api_base` calls the legacy completions endpoint. No `tokenizer` is given (a string there
would load one from Hugging Face) and `max_tokens` is set, so nothing counts tokens with tiktoken.
"""

from __future__ import annotations

import httpx
import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai_like import OpenAILike

from tests.clients.conftest import CLIENT_KEY

PROMPT = "Where is my order?"


def llm(base_url: str, http: httpx.Client, *, chat: bool, async_http: httpx.AsyncClient | None = None) -> OpenAILike:
    return OpenAILike(
        model="gpt-4o",
        api_base=base_url,
        api_key=CLIENT_KEY,
        is_chat_model=chat,
        max_tokens=64,
        max_retries=0,
        timeout=20,
        http_client=http,
        async_http_client=async_http,
    )


@pytest.mark.parametrize("chat", [False, True], ids=["completion-mode", "chat-mode"])
def test_openai_like_complete(base_url: str, http: httpx.Client, chat: bool) -> None:
    answer = llm(base_url, http, chat=chat).complete(PROMPT)
    assert answer.text.strip()
    assert answer.raw.model.startswith("gpt-4o")  # the SDK's own object, as Turnout answered it


@pytest.mark.parametrize("chat", [False, True], ids=["completion-mode", "chat-mode"])
def test_openai_like_stream_complete(base_url: str, http: httpx.Client, chat: bool) -> None:
    pieces = list(llm(base_url, http, chat=chat).stream_complete(PROMPT))
    assert len(pieces) > 1
    assert pieces[-1].text.strip()  # each piece carries the text so far
    assert "".join(piece.delta or "" for piece in pieces) == pieces[-1].text


def test_openai_like_chat_mode_chat(base_url: str, http: httpx.Client) -> None:
    messages = [ChatMessage(role=MessageRole.SYSTEM, content="Be brief."), ChatMessage(role="user", content=PROMPT)]
    answer = llm(base_url, http, chat=True).chat(messages)
    assert answer.message.role == MessageRole.ASSISTANT
    assert answer.message.content


@pytest.mark.parametrize("chat", [False, True], ids=["completion-mode", "chat-mode"])
async def test_openai_like_async_stream_complete(
    base_url: str, http: httpx.Client, async_http: httpx.AsyncClient, chat: bool
) -> None:
    model = llm(base_url, http, chat=chat, async_http=async_http)
    answer = await model.acomplete(PROMPT)
    pieces = [piece async for piece in await model.astream_complete(PROMPT)]
    assert answer.text.strip()
    assert pieces[-1].text.strip()


def test_openai_embedding(base_url: str, http: httpx.Client) -> None:
    embedding = OpenAIEmbedding(
        model_name="text-embedding-3-small", api_base=base_url, api_key=CLIENT_KEY, max_retries=0, http_client=http
    )
    one = embedding.get_text_embedding("Refunds take five days.")
    batch = embedding.get_text_embedding_batch(["Refunds take five days.", "Where is my order?"])
    query = embedding.get_query_embedding("Where is my order?")
    assert len(one) == len(query) > 0
    assert batch[0] == pytest.approx(one)
    assert batch[1] == pytest.approx(query)
