"""The judge: asked twice with the answers swapped, position bias cancelled, its prompt a file teams edit.

The judge route is the upstream boundary: here a function that answers as a chat route would, reading which
answer it was shown first from the prompt it received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.parity.answers import Pair
from proxy.parity.evaluate import build_judge
from proxy.parity.evaluators import Outcome
from proxy.parity.judge import DEFAULT_PROMPT, Judge, JudgeError, load_prompt, read_verdict, shown
from proxy.parity.settings import JudgeSettings

REQUEST = {"messages": [{"role": "user", "content": "What is 2 + 2? Costs $5."}]}
GOOD = {"choices": [{"message": {"role": "assistant", "content": "4"}}]}
BAD = {"choices": [{"message": {"role": "assistant", "content": "5"}}]}


class JudgeRoute:
    """Prefers the answer `better` (by its text), or always says `fixed`; records each prompt it got."""

    def __init__(self, better: str | None = None, fixed: str | None = None) -> None:
        self.better, self.fixed, self.prompts = better, fixed, []  # type: ignore[var-annotated]

    async def __call__(self, messages: list[dict[str, str]]) -> str:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        if self.fixed is not None:
            return f"Some reasoning.\nVERDICT: {self.fixed}"
        first = prompt.index(f"\n{self.better}\n", prompt.index("## Answer A")) < prompt.index("## Answer B")
        return "The first is right.\nVERDICT: A" if first else "The second is right.\n**VERDICT:** B"


def judge(route: Any) -> Judge:
    return Judge(route, load_prompt())


async def test_a_consistent_judge_decides_both_ways():
    assert (await judge(JudgeRoute(better="4")).evaluate(Pair(GOOD, BAD, REQUEST))).outcome is Outcome.WIN
    assert (await judge(JudgeRoute(better="4")).evaluate(Pair(BAD, GOOD, REQUEST))).outcome is Outcome.LOSS


async def test_a_judge_that_always_picks_one_position_gives_a_tie():
    for position in ("A", "B", "TIE"):
        verdict = await judge(JudgeRoute(fixed=position)).evaluate(Pair(GOOD, BAD, REQUEST))
        assert verdict.outcome is Outcome.TIE, position


async def test_both_orders_are_asked_and_the_prompt_carries_the_request_and_answers():
    route = JudgeRoute(better="4")
    verdict = await judge(route).evaluate(Pair(GOOD, BAD, REQUEST))
    assert len(route.prompts) == 2
    straight, swapped = route.prompts
    assert "user: What is 2 + 2? Costs $5." in straight
    assert straight.index("\n4\n") < straight.index("\n5\n")
    assert swapped.index("\n5\n") < swapped.index("\n4\n")
    assert verdict.detail == "candidate first: A, reference first: B"


async def test_a_reply_without_a_verdict_leaves_the_pair_undecided():
    async def rambling(messages: list[dict[str, str]]) -> str:
        return "Both have merits."

    assert (await judge(rambling).evaluate(Pair(GOOD, BAD, REQUEST))).outcome is Outcome.UNDECIDED


def test_the_last_verdict_line_counts():
    assert read_verdict("VERDICT: A\nOn reflection:\nverdict: tie") == "TIE"
    assert read_verdict("**VERDICT:** B") == "B"
    assert read_verdict("I would say A.") is None
    assert read_verdict("VERDICT: ABSTAIN") is None


def test_tool_calls_are_shown_to_the_judge():
    answer = {"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": '{"x": 1}'}}]}}]}
    assert shown(answer) == 'calls f({"x": 1})'
    assert shown({"choices": []}) == "(no answer)"


def test_the_shipped_prompt_loads_and_a_team_s_copy_is_checked(tmp_path: Path):
    assert set(load_prompt().get_identifiers()) == {"request", "answer_a", "answer_b"}
    assert DEFAULT_PROMPT.is_file()
    own = tmp_path / "judge.md"
    own.write_text("Q: $request\nA: $answer_a\nB: $answer_b\nCosts $$1. VERDICT: A, B or TIE", encoding="utf-8")
    assert build_judge(JudgeSettings(route="gpt4", prompt="judge.md"), JudgeRoute(fixed="A"), tmp_path).prompt.template
    own.write_text("Q: $request\nA: $answer_a", encoding="utf-8")
    with pytest.raises(JudgeError, match="missing"):
        load_prompt(own)
    own.write_text("Q: $request $answer_a $answer_b $question", encoding="utf-8")
    with pytest.raises(JudgeError, match="unknown"):
        load_prompt(own)
    own.write_text("Q: $request $answer_a $answer_b costs 5$", encoding="utf-8")
    with pytest.raises(JudgeError, match="dollar"):
        load_prompt(own)
    with pytest.raises(JudgeError, match="cannot read"):
        load_prompt(tmp_path / "absent.md")


async def test_a_team_s_prompt_is_the_one_sent(tmp_path: Path):
    own = tmp_path / "judge.md"
    own.write_text("Ours.\n## Answer A\n$answer_a\n## Answer B\n$answer_b\n## Request\n$request\n", encoding="utf-8")
    route = JudgeRoute(better="4")
    result = await build_judge(JudgeSettings(route="gpt4", prompt=str(own)), route).evaluate(Pair(GOOD, BAD, REQUEST))
    assert result.outcome is Outcome.WIN
    assert route.prompts[0].startswith("Ours.")
