"""The simulated upstream's batches and moderations, driven by the official SDK (issue 13, point 7).

A batch's input is a real uploaded file; its output file is answered by the simulator's own chat, embeddings,
Responses and completions logic, one line per input line. The simulator's clock is moved on by the test, so
every stage is seen without waiting; objects are checked against OpenAI's own schemas.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from routes.simulator.lifecycle import CLOCK, DEFAULT_STEP_MS
from routes.simulator.server import SimulatorServer
from tests.openapi import validate

STEP = DEFAULT_STEP_MS / 1000


def jsonl(url: str, bodies: list[dict[str, Any]]) -> bytes:
    rows = [{"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body} for i, body in enumerate(bodies)]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


async def upload(sdk: openai.AsyncOpenAI, content: bytes) -> str:
    return (await sdk.files.create(file=("input.jsonl", content), purpose="batch")).id


async def retrieve(sdk: openai.AsyncOpenAI, batch_id: str) -> dict[str, Any]:
    raw = await sdk.batches.with_raw_response.retrieve(batch_id)
    body: dict[str, Any] = raw.http_response.json()
    validate("Batch", body)
    return body


CHATS = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Question {i}"}]} for i in range(3)]


async def test_a_chat_batch_completes_with_one_answer_per_line(sdk, simulator: SimulatorServer):
    clock = simulator.runner.app[CLOCK]
    input_id = await upload(sdk, jsonl("/v1/chat/completions", CHATS))
    raw = await sdk.batches.with_raw_response.create(
        input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "1"}
    )
    validate("Batch", raw.http_response.json())
    batch = raw.parse()
    assert batch.id.startswith("batch_")
    seen = [batch.status]
    for _ in range(3):
        clock.advance(STEP)
        seen.append((await retrieve(sdk, batch.id))["status"])
    assert seen == ["validating", "in_progress", "finalizing", "completed"]

    done = await sdk.batches.retrieve(batch.id)
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 3, 0)
    assert done.output_file_id is not None
    assert done.completed_at is not None
    assert done.error_file_id is None
    output = (await sdk.files.content(done.output_file_id)).content.decode().splitlines()
    lines = [json.loads(line) for line in output]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    for line in lines:
        assert line["response"]["status_code"] == 200
        validate("CreateChatCompletionResponse", line["response"]["body"])
    assert (await sdk.files.retrieve(done.output_file_id)).purpose == "batch_output"


async def test_an_embeddings_batch_answers_vectors_and_a_bad_line_goes_to_the_error_file(sdk):
    bodies: list[dict[str, Any]] = [{"model": "text-embedding-3-small", "input": "a text"}, {"model": "e", "input": 5}]
    input_id = await upload(sdk, jsonl("/v1/embeddings", bodies))
    batch = await sdk.batches.create(
        input_file_id=input_id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        extra_headers={"x-simulated-step-ms": "0"},
    )
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    assert batch.output_file_id is not None
    assert batch.error_file_id is not None
    (answer,) = [json.loads(line) for line in (await sdk.files.content(batch.output_file_id)).content.splitlines()]
    validate("CreateEmbeddingResponse", answer["response"]["body"])
    (failure,) = [json.loads(line) for line in (await sdk.files.content(batch.error_file_id)).content.splitlines()]
    assert failure["custom_id"] == "req-1"
    assert failure["response"]["status_code"] == 400


async def completed_batch(sdk: openai.AsyncOpenAI, url: Any, bodies: list[dict[str, Any]]) -> openai.types.Batch:
    input_id = await upload(sdk, jsonl(url, bodies))
    step = {"x-simulated-step-ms": "0"}
    return await sdk.batches.create(input_file_id=input_id, endpoint=url, completion_window="24h", extra_headers=step)


async def lines_of(sdk: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in (await sdk.files.content(file_id)).content.splitlines()]


async def test_a_responses_batch_answers_responses_that_are_kept_and_a_bad_line_fails(sdk):
    bodies: list[dict[str, Any]] = [
        {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "Question 0"},
        {"model": "gpt-4o-mini", "input": [{"role": "user", "content": "Question 1"}], "store": False},
        {"model": "gpt-4o-mini", "input": "Again", "previous_response_id": "resp_unknown"},
        {"model": "gpt-4o-mini", "input": 5},
    ]
    batch = await completed_batch(sdk, "/v1/responses", bodies)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    assert batch.usage is not None
    assert batch.usage.output_tokens > 0
    answers = await lines_of(sdk, batch.output_file_id)
    assert [line["custom_id"] for line in answers] == ["req-0", "req-1"]
    for line in answers:
        assert line["response"]["status_code"] == 200
        validate("Response", line["response"]["body"])
        assert line["response"]["body"]["status"] == "completed"
    kept, unkept = (line["response"]["body"]["id"] for line in answers)
    assert (await sdk.responses.retrieve(kept)).id == kept  # continued or retrieved like any other
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(unkept)
    failures = await lines_of(sdk, batch.error_file_id)
    assert [(line["custom_id"], line["response"]["status_code"]) for line in failures] == [
        ("req-2", 404),
        ("req-3", 400),
    ]
    assert failures[0]["response"]["body"]["error"]["param"] == "previous_response_id"


async def test_a_completions_batch_answers_text_completions_and_a_bad_line_fails(sdk):
    bodies: list[dict[str, Any]] = [
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this", "max_tokens": 3},
        {"model": "gpt-3.5-turbo-instruct", "prompt": ["One", "Two"], "n": 2},
        {"model": "gpt-3.5-turbo-instruct", "prompt": {"not": "a prompt"}},
    ]
    batch = await completed_batch(sdk, "/v1/completions", bodies)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    first, second = await lines_of(sdk, batch.output_file_id)
    for line in (first, second):
        validate("CreateCompletionResponse", line["response"]["body"])
    assert first["response"]["body"]["choices"][0]["finish_reason"] == "length"
    assert len(second["response"]["body"]["choices"]) == 4
    (failure,) = await lines_of(sdk, batch.error_file_id)
    assert (failure["custom_id"], failure["response"]["status_code"]) == ("req-2", 400)


async def test_an_input_with_a_malformed_line_fails_validation(sdk, simulator: SimulatorServer):
    input_id = await upload(sdk, jsonl("/v1/chat/completions", CHATS[:1]) + b"not json\n")
    batch = await sdk.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")
    simulator.runner.app[CLOCK].advance(STEP)
    failed = await retrieve(sdk, batch.id)
    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["line"] == 2


async def test_a_cancelled_batch_is_cancelling_then_cancelled(sdk, simulator: SimulatorServer):
    input_id = await upload(sdk, jsonl("/v1/chat/completions", CHATS))
    batch = await sdk.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")
    raw = await sdk.batches.with_raw_response.cancel(batch.id)
    validate("Batch", raw.http_response.json())
    assert raw.parse().status == "cancelling"
    simulator.runner.app[CLOCK].advance(STEP)
    cancelled = await retrieve(sdk, batch.id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] is not None
    with pytest.raises(openai.ConflictError):
        await sdk.batches.cancel(batch.id)


async def test_batches_list_in_pages(sdk):
    input_id = await upload(sdk, jsonl("/v1/chat/completions", CHATS[:1]))
    ids = [
        (await sdk.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions", completion_window="24h")).id
        for _ in range(3)
    ]
    raw = await sdk.batches.with_raw_response.list(limit=2)
    body = raw.http_response.json()
    validate("ListBatchesResponse", body)
    assert body["has_more"] is True
    assert [batch.id async for batch in await sdk.batches.list(limit=2)] == ids[::-1]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"input_file_id": "file-nope"}, "id"),
        ({"endpoint": "/v1/nothing"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
    ],
)
async def test_a_batch_that_cannot_run_is_a_4xx(sdk, kwargs, param):
    input_id = await upload(sdk, jsonl("/v1/chat/completions", CHATS[:1]))
    arguments: Any = {"input_file_id": input_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk.batches.create(**{**arguments, **kwargs})
    assert raised.value.status_code in (400, 404)
    validate("ErrorResponse", raised.value.response.json())
    assert raised.value.param == param


async def test_moderations_flag_by_keyword_for_a_string_and_a_list(sdk):
    raw = await sdk.moderations.with_raw_response.create(input="I will kill the process")
    body = raw.http_response.json()
    validate("CreateModerationResponse", body)
    (result,) = raw.parse().results
    assert result.flagged
    assert result.categories.violence
    assert not result.categories.hate

    listed = await sdk.moderations.with_raw_response.create(
        model="omni-moderation-latest", input=[{"type": "text", "text": "A kind word"}, "hello"]
    )
    validate("CreateModerationResponse", listed.http_response.json())
    assert [r.flagged for r in listed.parse().results] == [False, False]
    with pytest.raises(openai.BadRequestError):
        await sdk.moderations.create(input=[])
