"""The whole way: a real `turnout serve` logs content to its traffic log, `turnout export finetune --config` reads it.

Requests go through the server with the official SDK (plain, streamed, multi-turn, tool calls and their
results); the server is stopped (which drains its log), then the export finds the log from the policy file,
and the file is uploaded to the simulator as fine-tuning data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai

from proxy.dataprep import check_training_file
from tests.e2e.conftest import SERVER_KEY, RunningProcess, clean_env, running, sdk_client, start_turnout, turnout_cli

POLICY = """\
upstreams:
  sim: {{base_url: "{origin}/v1", api_key: "{key}"}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
baseline: gpt4
traffic: {{enabled: true, store: "{log}", log: content}}
rules:
  - name: default
    route: gpt4
"""
TOOL: Any = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def talk(client: openai.OpenAI) -> None:
    system: Any = {"role": "system", "content": "Be brief."}
    for n in range(4):
        client.chat.completions.create(model="gpt-4", messages=[system, {"role": "user", "content": f"Plain {n}?"}])
    for n in range(4):
        stream = client.chat.completions.create(
            model="gpt-4",
            messages=[system, {"role": "user", "content": f"Streamed {n}?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass
    for n in range(2):
        history: Any = [
            {"role": "user", "content": f"Hi {n}"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "And now?"},
        ]
        client.chat.completions.create(model="gpt-4", messages=history)
    for n in range(2):
        asked: Any = [{"role": "user", "content": f"Weather in Paris, day {n}?"}]
        called = client.chat.completions.create(model="gpt-4", messages=asked, tools=[TOOL])
        calls = called.choices[0].message.tool_calls
        assert calls
        answered: Any = [
            *asked,
            called.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "18C"},
        ]
        client.chat.completions.create(model="gpt-4", messages=answered, tools=[TOOL])


def test_a_served_log_exports_to_an_uploadable_training_file(simulator: RunningProcess, tmp_path: Path) -> None:
    log = tmp_path / "traffic.jsonl"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(origin=simulator.origin, key=SERVER_KEY, log=log))
    with running(start_turnout(clean_env(TURNOUT_CONFIG=str(policy)))) as server, sdk_client(server.origin) as sdk:
        talk(sdk)
    out = tmp_path / "train.jsonl"
    done = turnout_cli(
        "export", "finetune", "--config", str(policy), "--out", str(out), "--holdout", "0", env=clean_env()
    )
    assert done.returncode == 0, done.stderr + done.stdout
    trained = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(trained) == 14, done.stdout
    report = check_training_file(trained, base_model="gpt-4o-mini")
    assert report.format_errors == {}
    assert report.ok
    users = [line["messages"][1]["content"] for line in trained if line["messages"][0]["role"] == "system"]
    assert {f"Streamed {n}?" for n in range(4)} <= set(users)  # the streams, assembled
    streamed = next(line for line in trained if line["messages"][1]["content"] == "Streamed 0?")
    assert streamed["messages"][-1]["role"] == "assistant"
    assert streamed["messages"][-1]["content"]
    with_tools = [line for line in trained if line.get("tools") == [TOOL]]
    assert len(with_tools) == 4
    assert sum("tool_calls" in line["messages"][-1] for line in with_tools) == 2
    assert sum(line["messages"][-1].get("weight") == 1 for line in trained) == 4  # multi-turn and tool results
    with openai.OpenAI(api_key="sk-test-upload", base_url=f"{simulator.origin}/v1", max_retries=0) as client:
        with out.open("rb") as training:
            uploaded = client.files.create(file=training, purpose="fine-tune")
        assert client.files.content(uploaded.id).content == out.read_bytes()
