"""The fine-tuning holdout register in both databases (`turnout_holdout`, migration 4) and as a JSONL file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.traffic.holdout import Held, Holdout, HoldoutRegister, open_holdout_register

AT = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres", "jsonl"])
def register(request: pytest.FixtureRequest, tmp_path: Path) -> HoldoutRegister:
    if request.param == "jsonl":
        return open_holdout_register(str(tmp_path / "traffic.jsonl"))
    if request.param == "sqlite":
        return open_holdout_register(f"sqlite:///{tmp_path / 'nested' / 'turnout.db'}")
    url: str = request.getfixturevalue("postgres_schema_url")
    return open_holdout_register(url)


async def test_a_fresh_register_holds_nothing(register: HoldoutRegister) -> None:
    assert await register.held() == Holdout()


async def test_held_exchanges_are_remembered_once_across_opens(register: HoldoutRegister) -> None:
    await register.add([Held("req-a", "gpt4", "long_context", "prompt-a"), Held("req-b", None, None)], AT)
    await register.add([Held("req-b", "gpt4", "x", "prompt-x"), Held("req-c", "ft", "default", "prompt-c")], AT)
    await register.add([], AT)
    held = await register.held()
    assert held.ids == {"req-a", "req-b", "req-c"}
    assert held.prompts == {"prompt-a", "prompt-c"}  # req-b was there already, without a prompt
