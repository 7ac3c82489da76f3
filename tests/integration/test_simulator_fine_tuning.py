"""The simulated upstream's fine-tuning jobs, driven by the official SDK: checks, life cycle, events, cancel.

The simulator's clock is moved on by the test (`SimulatorClock.advance`), so each stage is seen without
waiting for it; every object is checked against OpenAI's own schemas.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from routes.simulator.lifecycle import CLOCK, DEFAULT_STEP_MS
from routes.simulator.server import SimulatorServer
from tests.openapi import validate

STEP = DEFAULT_STEP_MS / 1000


async def training_file(sdk: openai.AsyncOpenAI) -> str:
    line = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n'
    return (await sdk.files.create(file=("train.jsonl", line * 10), purpose="fine-tune")).id


async def retrieve(sdk: openai.AsyncOpenAI, job_id: str) -> dict[str, Any]:
    raw = await sdk.fine_tuning.jobs.with_raw_response.retrieve(job_id)
    body: dict[str, Any] = raw.http_response.json()
    validate("FineTuningJob", body)
    return body


async def test_a_job_goes_through_its_life_cycle_to_a_model(sdk, simulator: SimulatorServer):
    clock = simulator.runner.app[CLOCK]
    file_id = await training_file(sdk)
    raw = await sdk.fine_tuning.jobs.with_raw_response.create(
        model="gpt-4o-mini-2024-07-18", training_file=file_id, suffix="demo", hyperparameters={"n_epochs": 2}
    )
    validate("FineTuningJob", raw.http_response.json())
    job = raw.parse()
    assert job.id.startswith("ftjob-")
    seen = [job.status]
    for _ in range(3):
        clock.advance(STEP)
        seen.append((await retrieve(sdk, job.id))["status"])
    assert seen == ["validating_files", "queued", "running", "succeeded"]

    done = await sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.fine_tuned_model == f"ft:gpt-4o-mini-2024-07-18:turnout:demo:{job.id.removeprefix('ftjob-')[:8]}"
    assert (done.trained_tokens or 0) > 0
    assert done.hyperparameters.n_epochs == 2
    assert done.finished_at is not None
    results = await sdk.files.content(done.result_files[0])
    assert results.content.startswith(b"step,")

    events_raw = await sdk.fine_tuning.jobs.with_raw_response.list_events(job.id)
    validate("ListFineTuningJobEventsResponse", events_raw.http_response.json())
    messages = [event.message async for event in await sdk.fine_tuning.jobs.list_events(job.id, limit=2)]
    assert messages[0] == "The job has successfully completed"
    assert messages[-1].startswith("Validating training file")

    checkpoints = [c async for c in await sdk.fine_tuning.jobs.checkpoints.list(job.id)]
    assert [c.step_number for c in checkpoints] == [20, 10]  # newest first, as OpenAI lists them
    with pytest.raises(openai.BadRequestError):
        await sdk.fine_tuning.jobs.cancel(job.id)


async def test_jobs_list_in_pages_newest_first(sdk):
    file_id = await training_file(sdk)
    ids = [(await sdk.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)).id for _ in range(3)]
    raw = await sdk.fine_tuning.jobs.with_raw_response.list(limit=2)
    body = raw.http_response.json()
    validate("ListPaginatedFineTuningJobsResponse", body)
    assert body["has_more"] is True
    assert [job.id async for job in await sdk.fine_tuning.jobs.list(limit=2)] == ids[::-1]


async def test_a_cancelled_job_stays_cancelled(sdk, simulator: SimulatorServer):
    job = await sdk.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=await training_file(sdk))
    raw = await sdk.fine_tuning.jobs.with_raw_response.cancel(job.id)
    validate("FineTuningJob", raw.http_response.json())
    assert raw.parse().status == "cancelled"
    simulator.runner.app[CLOCK].advance(10 * STEP)
    assert (await retrieve(sdk, job.id))["status"] == "cancelled"


async def test_a_zero_step_finishes_at_once(sdk):
    job = await sdk.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=await training_file(sdk),
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
        extra_headers={"x-simulated-step-ms": "0"},
    )
    assert job.status == "succeeded"
    assert job.hyperparameters.batch_size == 4


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"training_file": "file-nope"}, "training_file"),
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
        ({"hyperparameters": {"n_epochs": 51}}, "n_epochs"),
        ({"suffix": "x" * 65}, "suffix"),
    ],
)
async def test_a_job_that_cannot_run_is_a_400(sdk, kwargs, param):
    arguments: Any = {"model": "gpt-4o-mini", "training_file": await training_file(sdk), **kwargs}
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.fine_tuning.jobs.create(**arguments)
    validate("ErrorResponse", raised.value.response.json())
    assert raised.value.param == param


async def test_an_unknown_job_is_a_404(sdk):
    with pytest.raises(openai.NotFoundError):
        await sdk.fine_tuning.jobs.retrieve("ftjob-nope")
