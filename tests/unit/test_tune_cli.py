"""`turnout tune`, the scores `turnout test` prints beside a failing case, `turnout explain` of a `nearest` rule,
and the cases file's YAML loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from proxy.cli import cases as cases_module
from proxy.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "policies" / "examples"
INTENTS = EXAMPLES / "intents.yaml"
INTENT_CASES = EXAMPLES / "intents.cases.yaml"


@pytest.fixture(autouse=True)
def upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-placeholder")


@pytest.fixture
def knowledge_base(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the knowledge-base example (its index beside it), with the contact threshold set too high."""
    for name in ("knowledge-base.yaml", "knowledge-base.cases.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    shutil.copytree(EXAMPLES / "knowledge-index", tmp_path / "knowledge-index")
    shutil.copytree(EXAMPLES / "knowledge", tmp_path / "knowledge")
    policy = tmp_path / "knowledge-base.yaml"
    text = policy.read_text()
    assert text.count("threshold: 0.6\n") == 1
    policy.write_text(text.replace("threshold: 0.6\n", "threshold: 0.95\n"))
    return policy, tmp_path / "knowledge-base.cases.yaml"


def test_the_shipped_intents_example_passes_its_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(INTENTS)]) == 0
    assert main(["test", str(INTENTS), str(INTENT_CASES)]) == 0
    out = capsys.readouterr().out
    assert "9 passed, 0 failed" in out
    assert "ok   a poem is none of these: frontier by rule 'default'" in out


def test_test_prints_the_scores_beside_a_failing_case(
    knowledge_base: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, cases = knowledge_base
    assert main(["test", str(policy), str(cases)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("FAIL opening hours"))
    assert lines[fail + 1].strip().startswith("contact: similar_to: 0.")
    assert "< 0.95 (closest example: 'When is support open?')" in lines[fail + 1]
    assert lines[fail + 2].strip().startswith("documented: retrieval_score of 'docs': ")
    assert not any(line.startswith("       ") for line in lines[:fail])  # passing cases print no scores


def test_tune_suggests_and_writes_nothing_without_write(
    knowledge_base: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, cases = knowledge_base
    before = policy.read_bytes()
    assert main(["tune", str(policy), str(cases)]) == 0
    out = capsys.readouterr().out
    assert policy.read_bytes() == before
    assert "before: accuracy  85.7%  misroutes   0  unknown caught 1/1" in out
    assert "rule 'contact' threshold (now 0.95):" in out
    assert "  * 0.8    accuracy 100.0%" in out  # the best accuracy, nearest the current value
    assert "    0.9    accuracy  85.7%" in out
    assert "after: accuracy 100.0%" in out
    assert "suggest: rule 'contact' threshold 0.95 -> 0.8" in out
    assert "nothing written" in out


def test_tune_write_rewrites_only_the_values_and_keeps_the_comments(
    knowledge_base: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, cases = knowledge_base
    before = policy.read_text()
    assert main(["tune", str(policy), str(cases), "--write"]) == 0
    assert "wrote 1 value(s)" in capsys.readouterr().out
    assert policy.read_text() == before.replace("threshold: 0.95\n", "threshold: 0.8\n")
    assert main(["test", str(policy), str(cases)]) == 0
    assert main(["tune", str(policy), str(cases)]) == 0
    assert "suggest: keep every value" in capsys.readouterr().out


def test_tune_tries_a_nearest_margin_and_reports_unknown_traffic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", str(INTENTS), str(INTENT_CASES)]) == 0
    out = capsys.readouterr().out
    assert "rule 'intents' margin (now 0.01):" in out
    assert "unknown caught 2/2" in out  # the two cases that expect the default rule
    assert "rule 'intents' route 'shipping-ft' threshold (now 0.3):" in out
    assert "rule 'tools'" not in out  # no number to tune there


def test_tune_without_knobs_or_with_a_bad_cases_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    default = ROOT / "policies" / "default.yaml"
    assert main(["tune", str(default), str(ROOT / "policies" / "default.cases.yaml")]) == 0
    assert "no similar_to threshold or nearest margin to tune" in capsys.readouterr().out
    bad = tmp_path / "bad.cases.yaml"
    bad.write_text("cases: [{name: x}]\n")
    assert main(["tune", str(INTENTS), str(bad)]) == 1
    assert "not a cases file" in capsys.readouterr().err
    bad.write_text("cases: [{name: x, request: {model: gpt-4, messages: []}, expect: gpt4}]\n")
    assert main(["tune", str(INTENTS), str(bad)]) == 1
    assert "case 'x': not a request Turnout would accept" in capsys.readouterr().err


def test_explain_shows_the_nearest_routes_and_margin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "where is my parcel"}]}))
    assert main(["explain", str(INTENTS), str(request)]) == 0
    out = capsys.readouterr().out
    assert "route: shipping-ft\nrule: intents" in out
    assert "+ nearest: shipping-ft " in out
    assert "leads by" in out
    assert "shipping-ft: " in out
    assert "(threshold 0.300, closest example: " in out
    assert out.count("closest example") == 3  # the top three of the routes


def test_the_cases_file_loads_with_the_c_loader_when_libyaml_is_there() -> None:
    assert yaml.__with_libyaml__, "PyYAML here is built with libyaml"
    assert cases_module.LOADER is yaml.CSafeLoader
    loaded = cases_module.load_cases(str(INTENT_CASES))
    assert len(loaded) == 9
    assert loaded[0].expect == "billing-ft"


def test_check_names_the_line_of_a_mistake_in_a_nearest_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = INTENTS.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("        tech-ft:\n", "        tech-fx:\n"))
    line = text.splitlines().index("        tech-ft:") + 1
    assert main(["check", str(bad)]) == 1
    error = capsys.readouterr().err
    assert f"{bad}:{line}: rule 'intents': unknown route 'tech-fx' in nearest" in error
    assert "did you mean 'tech-ft'?" in error
