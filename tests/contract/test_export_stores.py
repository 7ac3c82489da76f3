"""`turnout export finetune` and `turnout replay` over every kind of traffic store: JSONL, SQLite, PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.cli.main import main
from proxy.traffic.holdout import held_out
from tests.exchange_log import exchange, write_log

IDS = [f"req-{n:03}" for n in range(40)]


@pytest.fixture(params=["jsonl", "sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "jsonl":
        url = str(tmp_path / "traffic.jsonl")
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'turnout.db'}"
    else:
        url = str(request.getfixturevalue("postgres_schema_url"))
    write_log(url, [exchange(request_id, n) for n, request_id in enumerate(IDS)])
    return url


def questions(path: Path) -> set[str]:
    return {json.loads(line)["messages"][1]["content"] for line in path.read_text().splitlines()}


def test_the_holdout_is_recorded_in_the_store_and_kept_out_of_later_exports(log: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    assert main(["export", "finetune", "--store", log, "--out", str(first), "--holdout", "25%"]) == 0
    held = {f"Question {i}?" for i in IDS if held_out(i, 0.25)}
    assert questions(tmp_path / "first.holdout.jsonl") == held
    assert main(["export", "finetune", "--store", log, "--out", str(second), "--holdout", "0"]) == 0
    assert questions(second) == {f"Question {i}?" for i in IDS} - held
    assert questions(tmp_path / "second.holdout.jsonl") == held


def test_replay_reads_every_store(log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "candidate.yaml"
    policy.write_text(
        'upstreams:\n  sim: {base_url: "http://127.0.0.1:9/v1"}\n'
        "routes:\n  small: {upstream: sim, model: gpt-4o-mini}\n"
        "rules:\n  - name: default\n    route: small\n"
    )
    assert main(["replay", "--policy", str(policy), "--store", log, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # each exchange: 20 in / 5 out on gpt-4o-mini = 20 x 0.15/1M + 5 x 0.60/1M = 0.000003 + 0.000003 = 0.000006
    assert report["total"]["requests"] == 40
    assert report["total"]["moved"] == 40
    assert report["total"]["projected_usd"] == "0.000240"
