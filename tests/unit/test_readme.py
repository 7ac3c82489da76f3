"""The README's example policy file loads, so that the documentation cannot drift from the schema."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.config.settings import load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_policy_example_is_valid(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Policy file") :]
    match = re.search(r"```yaml\n(server:.*?)```", section, re.DOTALL)
    assert match is not None, "the Policy file section has no example"
    path = tmp_path / "policy.yaml"
    path.write_text(match.group(1), encoding="utf-8")
    settings = load_settings({"TURNOUT_CONFIG": str(path), "OPENAI_API_KEY": "sk-readme"})
    assert settings.deployment.policy is not None
    assert settings.deployment.policy.rules == ("tools", "canary", "default")
