"""`turnout export finetune` and `turnout replay --execute` as commands, against the running simulator.

The training file is uploaded with the official SDK (`files.create(purpose="fine-tune")`) and trained on
(`fine_tuning.jobs.create`); the simulator keeps the bytes it was sent, which are read back.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai

from proxy.dataprep import check_training_file
from proxy.traffic.record import Exchange
from tests.e2e.conftest import RunningProcess, SimulatorCalls, clean_env, turnout_cli
from tests.exchange_log import chat_answer, chat_request, exchange, write_log

TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}


def varied_log() -> list[Exchange]:
    exchanges = [exchange(f"single-{n}", n) for n in range(12)]
    for n in range(6):
        multi = {
            "model": "gpt-4",
            "messages": [
                {"role": "user", "content": f"Hi {n}"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": f"And {n} + 1?"},
            ],
        }
        exchanges.append(exchange(f"multi-{n}", 20 + n, request=multi, answer=chat_answer(f"{n + 1}.")))
    for n in range(6):
        tools = chat_request(f"Weather in Paris, day {n}?", tools=[TOOL])
        answer = {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": None, "tool_calls": [CALL]},
                }
            ]
        }
        exchanges.append(exchange(f"tool-{n}", 40 + n, request=tools, answer=answer, stream=True))
    return exchanges


def test_the_exported_file_passes_the_checks_and_the_sdk_uploads_and_trains_on_it(
    simulator: RunningProcess, tmp_path: Path
) -> None:
    log = tmp_path / "traffic.jsonl"
    write_log(str(log), varied_log())
    out = tmp_path / "train.jsonl"
    done = turnout_cli(
        "export", "finetune", "--store", str(log), "--out", str(out), "--holdout", "10%", env=clean_env()
    )
    assert done.returncode == 0, done.stderr
    assert "format errors: none" in done.stdout
    trained = [json.loads(line) for line in out.read_text().splitlines()]
    held = [json.loads(line) for line in (tmp_path / "train.holdout.jsonl").read_text().splitlines()]
    assert len(trained) + len(held) == 24
    report = check_training_file(trained, base_model="gpt-4o-mini")
    assert report.format_errors == {}
    assert report.ok
    assert any(m.get("weight") == 0 for line in trained for m in line["messages"])
    assert any("tool_calls" in line["messages"][-1] and line.get("tools") == [TOOL] for line in trained)

    with openai.OpenAI(api_key="sk-test-upload", base_url=f"{simulator.origin}/v1", max_retries=0) as client:
        with out.open("rb") as training:
            uploaded = client.files.create(file=training, purpose="fine-tune")
        with (tmp_path / "train.holdout.jsonl").open("rb") as validation:
            holdout = client.files.create(file=validation, purpose="fine-tune")
        assert uploaded.purpose == "fine-tune"
        assert uploaded.bytes == out.stat().st_size
        assert client.files.content(uploaded.id).content == out.read_bytes()
        job = client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=uploaded.id, validation_file=holdout.id
        )
        assert job.training_file == uploaded.id
        assert job.validation_file == holdout.id
        deadline = time.monotonic() + 10
        while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.05)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job
        assert job.fine_tuned_model is not None
        assert job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:")


CANDIDATE = """\
upstreams:
  sim: {{base_url: "{origin}/v1", api_key: sk-test-candidate}}
routes:
  small: {{upstream: sim, model: gpt-4o-mini}}
  big: {{upstream: sim, model: gpt-4}}
baseline: big
rules:
  - name: tools
    when: {{has_tools: true}}
    route: big
  - name: default
    route: small
"""


def test_replay_execute_sends_a_deterministic_sample_to_the_candidate_routes(
    simulator: RunningProcess, simulator_call: SimulatorCalls, tmp_path: Path
) -> None:
    log = tmp_path / "traffic.jsonl"
    write_log(str(log), varied_log())
    policy = tmp_path / "candidate.yaml"
    policy.write_text(CANDIDATE.format(origin=simulator.origin))
    args = ("replay", "--policy", str(policy), "--store", str(log), "--execute", "--sample", "4", "--json")
    done = turnout_cli(*args, env=clean_env())
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"]["requests"] == 24
    replays = tmp_path / "traffic.replays.jsonl"
    assert report["executed"] == {"sent": 4, "answered": 4, "out": str(replays)}
    rows = [json.loads(line) for line in replays.read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == 200, row
        assert row["model"] == ("gpt-4" if row["request_id"].startswith("tool-") else "gpt-4o-mini")
        assert row["answer"]["object"] == "chat.completion"
        assert Decimal(row["cost"]) > 0
        assert row["original"]["route"] == "gpt4"
        received = simulator_call(f"{row['request_id']}-replay")
        assert received["body"]["model"] == row["model"]
        assert "stream" not in received["body"]
    # the same sample again (to another file)
    again = turnout_cli(*args[:-1], "--out", str(tmp_path / "again.jsonl"), env=clean_env())
    assert again.returncode == 0, again.stderr
    second = [json.loads(line)["request_id"] for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert second == [row["request_id"] for row in rows]
    assert "executed 4 (4 answered)" in again.stdout


PAIRED = """
upstreams:
  sim: {{base_url: "{origin}/v1", api_key: sk-test}}
routes:
  small: {{upstream: sim, model: gpt-4o-mini}}
  gpt4: {{upstream: sim, model: gpt-4}}
baseline: gpt4
database_url: "sqlite:///{database}"
rules:
  - name: default
    route: small
    parity: {{reference: gpt4, sample: 1, evaluators: [exact], margin: 0.9, min_pairs: 2}}
"""


def test_replay_execute_pairs_the_replayed_answers_with_the_logged_ones_for_the_parity_gate(
    simulator: RunningProcess, tmp_path: Path
) -> None:
    # Two logged answers are what the simulator answers those questions with (so the candidate's replayed
    # answer is the same: a tie); the other two were something else (a loss for exact match).
    logged = []
    for n in range(4):
        request = chat_request(f"Question {n}?")
        answer = chat_answer(f"Something else {n}.")
        if n < 2:
            sent = httpx.post(f"{simulator.origin}/v1/chat/completions", json={**request, "model": "gpt-4o-mini"})
            answer = {**sent.json(), "model": "gpt-4"}
        logged.append(exchange(f"paired-{n}", n, request=request, answer=answer))
    log = tmp_path / "traffic.jsonl"
    write_log(str(log), logged)
    policy = tmp_path / "candidate.yaml"
    policy.write_text(PAIRED.format(origin=simulator.origin, database=tmp_path / "turnout.db"))
    args = ("replay", "--policy", str(policy), "--store", str(log), "--execute", "--sample", "4", "--json")
    done = turnout_cli(*args, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["executed"]["pairs"] == {"default": {"loss": 2, "tie": 2}}
    shown = turnout_cli("parity", "--config", str(policy), "--json", env=clean_env())
    assert shown.returncode == 0, shown.stderr
    (row,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert (row["rule"], row["candidate"], row["reference"], row["pairs"]) == ("default", "small", "gpt4", 4)
