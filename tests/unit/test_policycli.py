"""`turnout check`, `turnout explain` and `turnout test`: exit statuses and what they print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = str(ROOT / "policies" / "default.yaml")


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-placeholder")


def test_check_accepts_the_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", DEFAULT]) == 0
    assert "OK (1 upstreams, 2 routes, 4 rules)" in capsys.readouterr().out


def test_check_names_the_file_line_and_rule_of_a_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        Path(DEFAULT).read_text().replace("route: frontier\n\n  - name: tools", "route: gpt5\n\n  - name: tools")
    )
    assert main(["check", str(bad)]) == 1
    error = capsys.readouterr().err
    assert f"{bad}:29: rule 'long-context': unknown route 'gpt5'" in error


def test_check_reports_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "/nonexistent/policy.yaml"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_test_passes_the_shipped_cases_and_fails_a_wrong_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", DEFAULT, str(ROOT / "policies" / "default.cases.yaml")]) == 0
    assert "8 passed, 0 failed" in capsys.readouterr().out
    wrong = tmp_path / "wrong.cases.yaml"
    wrong.write_text(
        "cases:\n  - name: not frontier\n    request: {model: gpt-4.1, messages: [{role: user, content: hi}]}\n"
        "    expect: frontier\n"
    )
    assert main(["test", DEFAULT, str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "FAIL not frontier: expected frontier, got support-ft by rule 'default'" in out
    assert "0 passed, 1 failed" in out


def test_explain_shows_each_rule_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Compare A and B"}]}))
    assert main(["explain", DEFAULT, str(request)]) == 0
    out = capsys.readouterr().out
    assert "route: frontier" in out
    assert "long-context: no match" in out
    assert "prompt_tokens" in out
    assert "reasoning: matched" in out
    assert "'compare'" in out


BAD_REQUESTS = {
    "1e400": (b'{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"x":1e400}', "'x' holds a number"),
    "nesting of 5,000 levels": (
        b'{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        "more than 128 levels",
    ),
    "invalid UTF-8": (b'{"model":"gpt-4","messages":[{"role":"user","content":"caf\xe9"}]}', "not valid UTF-8"),
    "not JSON": (b"model: gpt-4", "not valid JSON"),
    "an array": (b"[1, 2]", "Expected `object`, got `array`"),
    "no messages": (b'{"model":"gpt-4"}', "messages"),
    "n out of bounds": (b'{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"n":1e30}', "'n'"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_explain_names_what_is_wrong_with_a_request_the_server_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    raw, says = BAD_REQUESTS[case]
    request = tmp_path / "request.json"
    request.write_bytes(raw)
    assert main(["explain", DEFAULT, str(request)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"turnout explain: {request}: not a chat request Turnout would accept: ")
    assert says in error


def test_explain_reports_a_missing_request_file_and_a_header_without_a_colon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", DEFAULT, str(tmp_path / "missing.json")]) == 1
    assert "cannot read the request file" in capsys.readouterr().err
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}))
    assert main(["explain", DEFAULT, str(request), "--header", "x-team"]) == 1
    assert "--header 'x-team': expected NAME:VALUE" in capsys.readouterr().err
