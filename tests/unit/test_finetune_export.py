"""`turnout export finetune` on a logged traffic file: what is kept, the holdout and its register, the checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from proxy.cli.main import main
from proxy.traffic.holdout import held_out
from proxy.traffic.store import open_traffic_store
from tests.exchange_log import chat_answer, chat_request, exchange, write_log

IDS = [f"req-{n:03}" for n in range(60)]


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def questions(path: Path) -> set[str]:
    return {str(line["messages"][1]["content"]) for line in lines(path)}  # type: ignore[index]


@pytest.fixture(params=["jsonl", "sqlite"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = str(tmp_path / "traffic.jsonl") if request.param == "jsonl" else f"sqlite:///{tmp_path / 'turnout.db'}"
    others = [
        exchange("failed", 100, status=502, error="upstream_error", answer=None),
        exchange("no-content", 101, request=None, answer=None),
        exchange("embedding", 102, endpoint="embeddings", request={"model": "e", "input": "x"}, answer={"data": []}),
        exchange("cut", 103, answer={"choices": [{"finish_reason": "length", "message": {"content": "Cut"}}]}),
    ]
    write_log(url, [exchange(request_id, n) for n, request_id in enumerate(IDS)] + others)
    return url


def export(log: str, out: Path, *extra: str) -> int:
    return main(["export", "finetune", "--store", log, "--out", str(out), *extra])


def test_exports_the_good_chat_exchanges_with_a_deterministic_holdout(
    log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "train.jsonl"
    assert export(log, out) == 0
    printed = capsys.readouterr().out
    expected_held = {f"Question {i}?" for i in IDS if held_out(i, 0.1)}
    assert 0 < len(expected_held) < 20
    assert questions(out.with_name("train.holdout.jsonl")) == expected_held
    assert questions(out) == {f"Question {i}?" for i in IDS} - expected_held
    assert lines(out)[0] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question {sorted(set(IDS) - {i for i in IDS if held_out(i, 0.1)})[0]}?"},
            {"role": "assistant", "content": f"Answer {sorted(set(IDS) - {i for i in IDS if held_out(i, 0.1)})[0]}."},
        ]
    }
    assert f"wrote {60 - len(expected_held)} training examples" in printed
    for reason in ("failed", "no content logged", "endpoint embeddings", "the answer was cut by max_tokens"):
        assert f"skipped 1: {reason}" in printed
    assert "format errors: none" in printed
    assert f"examples: {60 - len(expected_held)}" in printed
    assert "estimated training cost on gpt-4o-mini-2024-07-18" in printed
    # the same log, exported again: byte for byte the same files
    first = out.read_bytes(), out.with_name("train.holdout.jsonl").read_bytes()
    assert export(log, out) == 0
    assert (out.read_bytes(), out.with_name("train.holdout.jsonl").read_bytes()) == first


def test_a_held_out_exchange_is_never_exported_for_training_later(log: str, tmp_path: Path) -> None:
    assert export(log, tmp_path / "first.jsonl", "--holdout", "20%") == 0
    held_at_20 = questions(tmp_path / "first.holdout.jsonl")
    assert export(log, tmp_path / "second.jsonl", "--holdout", "0") == 0
    assert questions(tmp_path / "second.jsonl").isdisjoint(held_at_20)
    assert questions(tmp_path / "second.holdout.jsonl") == held_at_20
    assert questions(tmp_path / "second.jsonl") | held_at_20 == {f"Question {i}?" for i in IDS}


def test_min_score_keeps_only_the_liked_answers(log: str, tmp_path: Path) -> None:
    async def rate() -> None:
        store = open_traffic_store(log)
        for request_id, score in (("req-000", 1.0), ("req-001", 0.2), ("req-002", 0.9)):
            assert await store.feedback(request_id, score=score, label=None, comment=None)
        await store.close()

    asyncio.run(rate())
    out = tmp_path / "liked.jsonl"
    assert export(log, out, "--min-score", "0.8", "--holdout", "0") == 0
    assert questions(out) == {"Question req-000?", "Question req-002?"}


def test_dedupe_keeps_the_best_scored_answer_of_a_prompt(tmp_path: Path) -> None:
    url = str(tmp_path / "traffic.jsonl")
    same = chat_request("Same question?")
    write_log(
        url,
        [
            exchange("a", 1, request=same, answer=chat_answer("First."), score=0.5),
            exchange("b", 2, request={**same, "temperature": 1}, answer=chat_answer("Best."), score=0.9),
            exchange("c", 3, request=same, answer=chat_answer("Later."), score=None),
            exchange("d", 4),
        ],
    )
    out = tmp_path / "train.jsonl"
    assert export(url, out, "--dedupe", "--holdout", "0") == 0
    answers = [line["messages"][-1]["content"] for line in lines(out)]  # type: ignore[index]
    assert answers == ["Best.", "Answer d."]
    assert export(url, out, "--holdout", "0") == 0
    assert len(lines(out)) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--holdout", "150%"], "--holdout"),
        (["--since", "last tuesday"], "--since"),
        (["--training-price", "cheap"], "--training-price"),
    ],
)
def test_bad_arguments_are_clear_errors(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(str(tmp_path / "t.jsonl"), tmp_path / "o.jsonl", *args) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_an_output_that_cannot_be_written_is_a_clear_error(
    log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").mkdir()
    assert export(log, tmp_path / "taken") == 1
    err = capsys.readouterr().err
    assert "Is a directory" in err
    assert "cannot read the traffic log" not in err


def test_a_held_out_prompt_is_never_trained_on_by_another_exchange(tmp_path: Path) -> None:
    url = str(tmp_path / "traffic.jsonl")
    held = next(i for i in IDS if held_out(i, 0.1))
    kept, other = [i for i in IDS if not held_out(i, 0.1)][:2]
    same = chat_request("The same question?")
    write_log(url, [exchange(held, 1, request=same), exchange(kept, 2, request=same), exchange(other, 3)])
    first = tmp_path / "first.jsonl"
    assert export(url, first) == 0
    assert questions(first.with_name("first.holdout.jsonl")) == {"The same question?"}
    assert questions(first) == {f"Question {other}?"}
    # later, the same prompt again, in a new exchange that the hash would keep for training: still left out
    write_log(url, [exchange(f"{kept}-again", 4, request=same)])
    second = tmp_path / "second.jsonl"
    assert export(url, second, "--holdout", "0") == 0
    assert questions(second) == {f"Question {other}?"}
