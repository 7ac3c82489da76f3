"""Which functions a simulated answer calls: OpenAI's `tool_choice` rules, parallel calls, ids (issue 13, point 7)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from routes.simulator.tool_calls import MAX_PARALLEL_CALLS, chosen_functions, tool_calls

ASK: Any = [{"role": "user", "content": "Hi"}]
AFTER_RESULT: Any = [*ASK, {"role": "tool", "tool_call_id": "call_1", "content": "done"}]


def tools(*names: str) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}} for name in names]


def names(**body: Any) -> list[str]:
    return [function["name"] for function in chosen_functions({"messages": ASK, **body})]


def test_auto_calls_every_offered_function_up_to_the_cap():
    offered = [f"f{i}" for i in range(MAX_PARALLEL_CALLS + 2)]
    assert names(tools=tools(*offered)) == offered[:MAX_PARALLEL_CALLS]
    assert names(tools=tools("a", "b"), parallel_tool_calls=False) == ["a"]


def test_after_a_tool_result_auto_answers_in_words_and_required_still_calls():
    assert chosen_functions({"messages": AFTER_RESULT, "tools": tools("a")}) == []
    assert chosen_functions({"messages": AFTER_RESULT, "tools": tools("a"), "tool_choice": "required"})


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", []),
        ({"type": "function", "function": {"name": "b"}}, ["b"]),
        ({"type": "function", "function": {"name": "missing"}}, ["a"]),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": tools("c")}}, ["c"]),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": tools("b", "c")}}, ["b", "c"]),
    ],
)
def test_tool_choice(choice, expected):
    assert names(tools=tools("a", "b", "c"), tool_choice=choice) == expected


def test_only_function_tools_are_called():
    custom: Any = [{"type": "custom", "custom": {"name": "grammar"}}]
    assert names(tools=custom) == []


def test_each_call_has_its_own_id_and_json_arguments():
    parameters = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 5}}, "required": ["n"]}
    calls = tool_calls([{"name": "f", "parameters": parameters}] * 3)
    assert len({call.id for call in calls}) == 3
    assert all(call.id.startswith("call_") and len(call.id) == 29 for call in calls)
    assert [json.loads(call.arguments) for call in calls] == [{"n": 5}] * 3
