"""The cost a real client sees through `turnout serve`: the headers, and the comments that end a stream."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai

from proxy.accounting.cost import cost_usd
from proxy.wire.schemas import Usage

MESSAGES: Any = [{"role": "user", "content": "What does it cost?"}]


def test_an_answer_carries_its_cost(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4", messages=MESSAGES)
    usage = raw.parse().usage
    assert usage is not None
    expected = cost_usd("gpt-4", Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens))
    assert Decimal(raw.headers["x-turnout-cost-usd"]) == expected > 0
    assert raw.headers["x-turnout-savings-usd"] == "0"  # no baseline: every answer is its own


def test_the_sdk_reads_a_stream_that_ends_with_its_cost(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert [line.split(":")[1].strip() for line in comments] == ["x-turnout-cost-usd", "x-turnout-savings-usd"]
    assert lines[-1] == "data: [DONE]"

    # The SDK's own stream parser skips the comments: every chunk parses (strict validation), usage last.
    chunks = list(
        client.chat.completions.create(
            model="gpt-4", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert Decimal(comments[0].rsplit(" ", 1)[1]) == cost_usd(
        "gpt-4", Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
