"""LangChain (`langchain-openai`) against Turnout: `ChatOpenAI` on Chat Completions and on the Responses API,
streamed and not, `OpenAIEmbeddings`, and `with_structured_output` in its three methods.

Only `base_url` and the key change from what a team writes; `max_retries=0` so that an error shows as it is.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, SecretStr

from tests.clients.conftest import CLIENT_KEY

PROMPT = "Where is my order?"


def chat(base_url: str, http: httpx.Client, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o",
        base_url=base_url,
        api_key=SecretStr(CLIENT_KEY),
        max_retries=0,
        timeout=20,
        http_client=http,
        **options,
    )


def text_of(message: AIMessage | AIMessageChunk) -> str:
    """The text of a message, whether its content is a string (Chat Completions) or blocks (Responses)."""
    if isinstance(message.content, str):
        return message.content
    return "".join(block["text"] for block in message.content if isinstance(block, dict) and "text" in block)


@pytest.mark.parametrize("responses", [False, True], ids=["chat-completions", "responses-api"])
def test_chat_openai_invoke(base_url: str, http: httpx.Client, responses: bool) -> None:
    message = chat(base_url, http, use_responses_api=responses).invoke(PROMPT)
    assert isinstance(message, AIMessage)
    assert text_of(message)
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] > 0
    assert message.usage_metadata["output_tokens"] > 0
    assert message.response_metadata["model_name"].startswith("gpt-4o")


@pytest.mark.parametrize("responses", [False, True], ids=["chat-completions", "responses-api"])
def test_chat_openai_stream(base_url: str, http: httpx.Client, responses: bool) -> None:
    chunks = list(chat(base_url, http, use_responses_api=responses, stream_usage=True).stream(PROMPT))
    assert len(chunks) > 1  # streamed, not one answer
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert isinstance(whole, AIMessageChunk)
    assert text_of(whole)
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize("responses", [False, True], ids=["chat-completions", "responses-api"])
async def test_chat_openai_async_stream(
    base_url: str, http: httpx.Client, async_http: httpx.AsyncClient, responses: bool
) -> None:
    model = chat(base_url, http, use_responses_api=responses, http_async_client=async_http)
    pieces = [text_of(chunk) async for chunk in model.astream(PROMPT)]
    answer = await model.ainvoke(PROMPT)
    assert "".join(pieces)
    assert text_of(answer)


def test_openai_embeddings(base_url: str, http: httpx.Client) -> None:
    # `check_embedding_ctx_length=False`: otherwise LangChain counts tokens with tiktoken, which downloads its files.
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=base_url,
        api_key=SecretStr(CLIENT_KEY),
        max_retries=0,
        check_embedding_ctx_length=False,
        http_client=http,
    )
    documents = embeddings.embed_documents(["Where is my order?", "Refunds take five days."])
    query = embeddings.embed_query("Where is my order?")
    assert len(documents) == 2
    assert len(query) == len(documents[0]) > 0
    assert all(isinstance(value, float) for value in query)
    assert query == pytest.approx(documents[0])  # the same text, the same vector


class Order(BaseModel):
    """An order the user asks about."""

    order_id: str
    items: int
    express: bool


ORDER_SCHEMA: dict[str, Any] = {
    "title": "Order",
    "description": "An order the user asks about.",
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "items": {"type": "integer"}, "express": {"type": "boolean"}},
    "required": ["order_id", "items", "express"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(
    base_url: str, http: httpx.Client, method: Literal["json_schema", "function_calling"]
) -> None:
    """A pydantic schema: `json_schema` sends `response_format`, `function_calling` a forced tool; both parse."""
    structured = chat(base_url, http).with_structured_output(Order, method=method, include_raw=True)
    result: Any = structured.invoke(f"Order {PROMPT}")
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"], Order)


def test_with_structured_output_json_mode(base_url: str, http: httpx.Client) -> None:
    """`json_mode` sends `response_format: json_object` (the schema is the prompt's business) and parses the JSON."""
    structured = chat(base_url, http).with_structured_output(ORDER_SCHEMA, method="json_mode", include_raw=True)
    result: Any = structured.invoke(f"Answer in JSON with order_id, items and express. {PROMPT}")
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"], dict)
    assert result["raw"].response_metadata["model_name"].startswith("gpt-4o")


def test_with_structured_output_on_the_responses_api(base_url: str, http: httpx.Client) -> None:
    structured = chat(base_url, http, use_responses_api=True).with_structured_output(Order, method="json_schema")
    assert isinstance(structured.invoke(f"Order {PROMPT}"), Order)
