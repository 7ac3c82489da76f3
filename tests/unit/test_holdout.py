"""The fine-tuning holdout: a hash of the request id decides, the same on every run; the register remembers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.traffic.holdout import Held, Holdout, JsonlHoldoutRegister, held_out, open_holdout_register, parse_share


def test_the_holdout_is_a_function_of_the_id_alone() -> None:
    ids = [f"req-{n}" for n in range(10_000)]
    first = {i for i in ids if held_out(i, 0.1)}
    assert first == {i for i in ids if held_out(i, 0.1)}
    assert 900 < len(first) < 1100  # about a tenth
    # pinned: the bucket is sha256's first 8 bytes mod 10,000 (a change of hash would move every exchange)
    assert [held_out(i, 0.1) for i in ("req-0", "req-1", "req-2", "req-3", "req-4")] == PINNED
    smaller = {i for i in ids if held_out(i, 0.05)}
    assert smaller < first
    assert not any(held_out(i, 0.0) for i in ids)


PINNED = [True, True, False, False, False]


@pytest.mark.parametrize(("text", "share"), [("10%", 0.1), ("0.25", 0.25), ("0", 0.0), (" 5% ", 0.05)])
def test_shares_are_percentages_or_fractions(text: str, share: float) -> None:
    assert parse_share(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["100%", "-1%", "1.5", "ten"])
def test_bad_shares_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--holdout"):
        parse_share(text)


async def test_the_jsonl_register_is_beside_the_log_and_keeps_each_id_once(tmp_path: Path) -> None:
    register = open_holdout_register(str(tmp_path / "traffic.jsonl"))
    assert isinstance(register, JsonlHoldoutRegister)
    assert register.path == tmp_path / "traffic.holdout.jsonl"
    assert await register.held() == Holdout()
    at = datetime(2026, 12, 4, tzinfo=UTC)
    await register.add([Held("a", "gpt4", "long", "key-a"), Held("b", None, None)], at)
    await register.add([Held("a", "gpt4", "long", "key-x"), Held("c", "ft", "default", "key-c")], at)
    assert await register.held() == Holdout(frozenset({"a", "b", "c"}), frozenset({"key-a", "key-c"}))
    assert len(register.path.read_text().splitlines()) == 3


def test_a_jsonl_directory_store_keeps_its_register_inside(tmp_path: Path) -> None:
    register = open_holdout_register(f"jsonl:///{tmp_path}")
    assert isinstance(register, JsonlHoldoutRegister)
    assert register.path == tmp_path / "holdout.jsonl"
