"""`turnout prices [MODEL]`: the price data in force, the table or one model at every tier, the policy's override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.accounting.prices import PRICES_VERSION
from proxy.cli.main import main

POLICY = """
upstreams:
  openai: {base_url: "http://127.0.0.1:9/v1", api_key: "${OPENAI_API_KEY}"}
routes:
  support: {upstream: openai, model: "ft:gpt-4o-mini-2024-07-18:acme::x"}
  gpt4: {upstream: openai, model: gpt-4}
baseline: gpt4
prices:
  "ft:gpt-4o-mini": {input: 0.001, output: 0.002, cached_input: 0.0005}
rules:
  - name: default
    route: support
"""


def test_the_table_names_its_version_and_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"price data {PRICES_VERSION} ")
    assert "\nft:gpt-4o-mini " in out
    assert "\ngpt-4 " in out


def test_one_model_at_every_tier_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "o4-mini-2025-04-16", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["version"], shown["entry"], shown["policy"]) == (PRICES_VERSION, "o4-mini", False)
    tiers = shown["per_1m_tokens"]
    assert tiers["standard"] == {
        "input": "1.1",
        "cached_input": "0.275",
        "output": "4.4",
        "audio_input": None,
        "audio_output": None,
    }
    assert (tiers["flex"]["input"], tiers["batch"]["cached_input"], tiers["priority"]["output"]) == (
        "0.55",
        "0.138",
        "8",
    )


def test_a_model_without_a_price_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "llama-3-70b"]) == 1
    assert "no price for the model 'llama-3-70b'" in capsys.readouterr().err


def test_the_policy_file_s_prices_are_in_force_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-placeholder")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    assert main(["prices", "ft:gpt-4o-mini-2024-07-18:acme::x", "--config", str(policy), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["version"], shown["policy"], shown["baseline"]) == (f"{PRICES_VERSION}+policy", True, "gpt-4")
    assert shown["per_1m_tokens"]["standard"]["cached_input"] == "0.5"
    assert shown["per_1m_tokens"]["batch"]["input"] == "0.5"  # half the standard rate, none being given
    policy.write_text("rules: [", encoding="utf-8")
    assert main(["prices", "--config", str(policy)]) == 2
