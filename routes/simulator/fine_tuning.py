"""The simulator's fine-tuning jobs: create, retrieve, list, cancel, events and checkpoints, with a life cycle.

A job is checked as OpenAI checks it (`model`; `training_file`, and `validation_file` when given, files
the simulator holds; `hyperparameters` or `method` within OpenAI's bounds; `suffix` of at most 64
characters) and then goes `validating_files` → `queued` → `running` → `succeeded`, one step each
(`routes.simulator.lifecycle`: fast by default, `x-simulated-step-ms` on the create call to slow it).
Once succeeded it has its `fine_tuned_model` (`ft:<model>:turnout:<suffix>:<id>`), `trained_tokens` (the
training file's size over four, times the epochs), a results file (`fine-tune-results`, CSV) and one
checkpoint per epoch; every stage it reaches adds its events. A cancelled job stays `cancelled`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import decode_json_object
from routes.simulator.common import read_body
from routes.simulator.faults import simulated, with_faults
from routes.simulator.files import FILES, page
from routes.simulator.lifecycle import CLOCK, Lifecycle, SimulatorClock, now, step_seconds
from routes.simulator.limits import SimulatorRejectedError

__all__ = ["JOBS", "LIFECYCLE", "add_fine_tuning_routes"]

LIFECYCLE = Lifecycle(stages=("validating_files", "queued", "running"), final="succeeded")
MAX_JOBS = 1_000
_BOUNDS = {"n_epochs": (1, 50, int), "batch_size": (1, 256, int), "learning_rate_multiplier": (0, 1e6, float)}
_RESOLVED = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8}
_MESSAGES = (
    "Validating training file: {training_file}",
    "Files validated, moving job to queued state",
    "Fine-tuning job started",
    "New fine-tuned model created: {fine_tuned_model}",
)


@dataclass(slots=True)
class _Job:
    body: dict[str, Any]
    """The job as OpenAI describes it, at creation (status and the rest filled in when looked at)."""
    started: float
    step: float
    training_bytes: int
    suffix: str
    cancelled_at: int | None = None
    results: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


JOBS = web.AppKey[dict[str, _Job]]("fine_tuning_jobs")


def _hyperparameters(body: dict[str, Any]) -> dict[str, Any]:
    """The job's hyperparameters (from `method` or the older top-level field), `auto` resolved.

    Raises:
        SimulatorRejectedError: a value is out of OpenAI's bounds.
    """
    method = body.get("method")
    asked = body.get("hyperparameters")
    if isinstance(method, dict):
        kind = method.get("type")
        if kind not in ("supervised", "dpo", "reinforcement"):
            raise SimulatorRejectedError(
                "Invalid 'method.type': expected supervised, dpo or reinforcement.", param="method"
            )
        inner = method.get(kind)
        asked = inner.get("hyperparameters") if isinstance(inner, dict) else asked
    asked = asked if isinstance(asked, dict) else {}
    resolved: dict[str, Any] = {}
    for name, (low, high, kind_) in _BOUNDS.items():
        value = asked.get(name, "auto")
        if value == "auto":
            resolved[name] = _RESOLVED[name]
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high or value == 0:
            raise SimulatorRejectedError(f"Invalid 'hyperparameters.{name}': {str(value)[:40]}.", param=name)
        resolved[name] = kind_(value)
    return resolved


def _file(request: web.Request, body: dict[str, Any], name: str) -> int:
    """The size of the file the body names in `name` (which must be one the simulator holds)."""
    file_id = body.get(name)
    if not isinstance(file_id, str):
        raise SimulatorRejectedError(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    try:
        return request.app[FILES].get(file_id).size
    except SimulatorRejectedError as exc:
        raise SimulatorRejectedError(f"invalid {name}: {file_id[:64]}", param=name, code="invalid_value") from exc


def _checked(request: web.Request, raw: bytes) -> dict[str, Any]:
    try:
        body = decode_json_object(raw)
    except InvalidRequestError as exc:
        raise SimulatorRejectedError.of(exc) from exc
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise SimulatorRejectedError(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
        raise SimulatorRejectedError("Invalid 'suffix': a string of at most 64 characters.", param="suffix")
    return body


async def _create(request: web.Request) -> web.Response:
    raw = await read_body(request)
    body = _checked(request, raw)
    _, error = await simulated(request, body, raw)
    if error is not None:
        return error
    training_bytes = _file(request, body, "training_file")
    if body.get("validation_file") is not None:
        _file(request, body, "validation_file")
    hyperparameters = _hyperparameters(body)
    jobs = request.app[JOBS]
    if len(jobs) >= MAX_JOBS:
        jobs.pop(next(iter(jobs)))
    started = now(request.app)
    job_id = f"ftjob-{secrets.token_hex(12)}"
    method = body.get("method")
    kind = str(method.get("type", "supervised")) if isinstance(method, dict) else "supervised"
    seed = body.get("seed")
    described = {
        "object": "fine_tuning.job",
        "id": job_id,
        "model": body["model"],
        "created_at": int(started),
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "org-simulated",
        "result_files": [],
        "status": LIFECYCLE.stages[0],
        "validation_file": body.get("validation_file"),
        "training_file": body["training_file"],
        "hyperparameters": hyperparameters,
        "trained_tokens": None,
        "error": None,
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else 42,
        "estimated_finish": None,
        "integrations": None,
        "metadata": body.get("metadata"),
        "method": {"type": kind, kind: {"hyperparameters": hyperparameters}},
    }
    step = step_seconds(request.headers)
    job = _Job(described, started, step, training_bytes=training_bytes, suffix=body.get("suffix") or "")
    jobs[job_id] = job
    return web.json_response(_current(request.app, job))


def _current(app: web.Application, job: _Job) -> dict[str, Any]:
    """The job as it is now: its status from the clock, and what the stages reached so far made."""
    described = job.body
    at = now(app)
    reached = LIFECYCLE.reached(job.started, job.step, at)
    if job.cancelled_at is not None:
        described["status"] = "cancelled"
        return described
    described["status"] = LIFECYCLE.status(job.started, job.step, at)
    short = described["id"].removeprefix("ftjob-")[:8]
    model = f"ft:{described['model']}:turnout:{job.suffix}:{short}"
    while len(job.events) < reached + 1:
        index = len(job.events)
        message = _MESSAGES[index].format(training_file=described["training_file"], fine_tuned_model=model)
        job.events.append(_event(LIFECYCLE.entered(job.started, job.step, index), message))
    if described["status"] == LIFECYCLE.final and described["fine_tuned_model"] is None:
        epochs = described["hyperparameters"]["n_epochs"]
        csv = "step,train_loss,train_accuracy\n" + "".join(
            f"{s},{1.5 / s:.4f},{1 - 0.5 / s:.4f}\n" for s in range(1, 11)
        )
        results = app[FILES].put("step_metrics.csv", "fine-tune-results", csv.encode())
        described.update(
            fine_tuned_model=model,
            finished_at=LIFECYCLE.entered(job.started, job.step, reached),
            trained_tokens=max(1, job.training_bytes // 4) * epochs,
            result_files=[results.id],
        )
        job.events.append(_event(described["finished_at"], "The job has successfully completed"))
    return described


def _event(created_at: int, message: str) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": f"ftevent-{secrets.token_hex(12)}",
        "created_at": created_at,
        "level": "info",
        "message": message,
        "type": "message",
        "data": {},
    }


def _job(request: web.Request) -> _Job:
    job = request.app[JOBS].get(request.match_info["job_id"])
    if job is None:
        raise SimulatorRejectedError(
            f"No fine-tuning job found with id {request.match_info['job_id'][:64]}", status=404
        )
    return job


async def _retrieve(request: web.Request) -> web.Response:
    return web.json_response(_current(request.app, _job(request)))


async def _list(request: web.Request) -> web.Response:
    jobs = [_current(request.app, job) for job in request.app[JOBS].values()]
    return web.json_response(page(request, jobs, 20, with_ids=False))


async def _cancel(request: web.Request) -> web.Response:
    job = _job(request)
    status = _current(request.app, job)["status"]
    if status in ("succeeded", "failed", "cancelled"):
        raise SimulatorRejectedError(f"Job has already {'completed' if status == 'succeeded' else status}.")
    job.cancelled_at = int(now(request.app))
    job.events.append(_event(job.cancelled_at, "Fine-tuning job cancelled"))
    return web.json_response(_current(request.app, job))


async def _events(request: web.Request) -> web.Response:
    job = _job(request)
    _current(request.app, job)
    return web.json_response(page(request, list(job.events), 20, with_ids=False))


async def _checkpoints(request: web.Request) -> web.Response:
    job = _current(request.app, _job(request))
    checkpoints = []
    if job["status"] == "succeeded":
        for epoch in range(1, job["hyperparameters"]["n_epochs"] + 1):
            checkpoints.append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": f"ftckpt_{job['id'].removeprefix('ftjob-')[:16]}{epoch}",
                    "created_at": job["finished_at"],
                    "fine_tuned_model_checkpoint": f"{job['fine_tuned_model']}:ckpt-step-{epoch * 10}",
                    "fine_tuning_job_id": job["id"],
                    "step_number": epoch * 10,
                    "metrics": {
                        "step": epoch * 10.0,
                        "train_loss": 1.5 / epoch,
                        "train_mean_token_accuracy": 1 - 0.5 / epoch,
                    },
                }
            )
    answer = page(request, checkpoints, 10, with_ids=True)
    return web.Response(body=msgspec.json.encode(answer), content_type="application/json")


def add_fine_tuning_routes(app: web.Application) -> None:
    """Serve the fine-tuning jobs API from `app` (under `/v1` and without it); needs the Files API."""
    app[JOBS] = {}
    app[CLOCK] = app.get(CLOCK) or SimulatorClock()
    for prefix in ("/v1", ""):
        jobs = prefix + "/fine_tuning/jobs"
        app.router.add_post(jobs, _create)
        app.router.add_get(jobs, with_faults(_list))
        app.router.add_get(jobs + "/{job_id}", with_faults(_retrieve))
        app.router.add_post(jobs + "/{job_id}/cancel", with_faults(_cancel))
        app.router.add_get(jobs + "/{job_id}/events", with_faults(_events))
        app.router.add_get(jobs + "/{job_id}/checkpoints", with_faults(_checkpoints))
