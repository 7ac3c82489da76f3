"""The `turnout` command itself, as a process: what a user sees on a terminal."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import ROOT, turnout_cli

DEFAULT = str(ROOT / "policies" / "default.yaml")
NESTED = b'{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
"""A request nested 5,000 levels deep: Python's own recursion limit is 1,000."""


def test_the_turnout_command_explains_a_bad_request_without_a_traceback(tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_bytes(NESTED)
    done = turnout_cli("explain", DEFAULT, str(request), env={**os.environ, "OPENAI_API_KEY": "sk-placeholder"})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "more than 128 levels" in done.stderr
