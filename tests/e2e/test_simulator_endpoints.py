"""`turnout simulate` as a process, driven by the official SDK (3.x and, in `make test`, 2.x) for every endpoint
it plays beyond chat's basics: structured output, tool choice, files, fine-tuning, batches, moderations;
each straight at the simulator and through `turnout serve` in front of it.

The deeper checks (every stage of a life cycle, bounds, a 100 MB file) are in
`tests/integration/test_simulator_*.py`; these show that what an application in simulator mode calls
works with either major version of the SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest

from tests.e2e.conftest import RunningProcess, sdk_client
from tests.openapi import validate

INSTANT: Any = {"x-simulated-step-ms": "0"}
MESSAGES: Any = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module", params=["simulator", "turnout"])
def sdk(request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
    """The SDK on the simulator itself, and on Turnout in front of it (files, fine-tuning, batches and
    moderations through the pass-through; chat routed)."""
    server: RunningProcess = request.getfixturevalue(request.param)
    with sdk_client(server.origin) as client:
        yield client


class Answer(pydantic.BaseModel):
    title: str
    score: int = pydantic.Field(ge=1, le=5)
    tags: list[str]


def test_parse_gives_a_pydantic_model(sdk):
    completion = sdk.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer)
    assert isinstance(completion.choices[0].message.parsed, Answer)


def test_tool_choice_and_parallel_calls(sdk):
    tools: Any = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
        for name in ("a", "b")
    ]
    both = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools)
    assert [call.function.name for call in both.choices[0].message.tool_calls or []] == ["a", "b"]
    none = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=tools, tool_choice="none")
    assert none.choices[0].message.tool_calls is None


def test_a_file_a_job_and_a_batch_complete(sdk):
    line = {
        "custom_id": "one",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": MESSAGES},
    }
    raw = sdk.files.with_raw_response.create(file=("in.jsonl", json.dumps(line).encode() + b"\n"), purpose="batch")
    validate("OpenAIFile", raw.http_response.json())
    file_id = raw.parse().id

    job = sdk.fine_tuning.jobs.with_raw_response.create(
        model="gpt-4o-mini", training_file=file_id, extra_headers=INSTANT
    )
    validate("FineTuningJob", job.http_response.json())
    assert job.parse().status == "succeeded"
    assert (job.parse().fine_tuned_model or "").startswith("ft:gpt-4o-mini:turnout:")

    batch = sdk.batches.with_raw_response.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", extra_headers=INSTANT
    )
    validate("Batch", batch.http_response.json())
    output_id = batch.parse().output_file_id
    assert output_id is not None
    (answer,) = sdk.files.content(output_id).content.splitlines()
    assert json.loads(answer)["custom_id"] == "one"
    validate("ListFilesResponse", sdk.files.with_raw_response.list().http_response.json())
    validate("ListBatchesResponse", sdk.batches.with_raw_response.list().http_response.json())
    validate("DeleteFileResponse", sdk.files.with_raw_response.delete(file_id).http_response.json())


def test_moderations(sdk):
    raw = sdk.moderations.with_raw_response.create(input=["you idiot", "good morning"])
    validate("CreateModerationResponse", raw.http_response.json())
    assert [result.flagged for result in raw.parse().results] == [True, False]
