"""The fine-tuning holdout register in both databases (`turnout_holdout`, migration 4) and as a JSONL file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.traffic.holdout import Held, HoldoutRegister, open_holdout_register

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
    assert await register.held() == set()


async def test_held_exchanges_are_remembered_once_across_opens(register: HoldoutRegister) -> None:
    await register.add([Held("req-a", "gpt4", "long_context"), Held("req-b", None, None)], AT)
    await register.add([Held("req-b", "gpt4", "x"), Held("req-c", "ft", "default")], AT)
    await register.add([], AT)
    assert await register.held() == {"req-a", "req-b", "req-c"}
