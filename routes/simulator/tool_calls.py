"""Which functions a simulated chat answer calls, and with what: `tool_choice`, parallel calls, valid arguments.

OpenAI's rules, as a client relies on them:

- `tool_choice: "none"` (or no function tools): no call.
- `"auto"` (the default): a call, unless the last message is a tool's result (then the model answers in words).
- `"required"`: a call, whatever the last message is.
- `{"type": "function", "function": {"name": N}}`: one call, to `N`.
- `{"type": "allowed_tools", "allowed_tools": {"mode": "auto" | "required", "tools": [...]}}`: as `auto` or
  `required`, among the listed functions only.

With more than one function on offer and `parallel_tool_calls` not false, the answer calls each offered
function once, in the order offered, up to `MAX_PARALLEL_CALLS` (a model asked "weather and time in Paris"
with both tools calls both); otherwise it calls the first. Each call has its own `call_` id, and arguments
valid against the function's `parameters` (`routes.simulator.schema_values`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import msgspec

from routes.simulator.schema_values import value_for

__all__ = ["MAX_PARALLEL_CALLS", "ToolCall", "chosen_functions", "tool_calls"]

MAX_PARALLEL_CALLS = 4


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of an answer."""

    name: str
    arguments: str
    """The arguments as the JSON text the model writes."""
    id: str = field(default_factory=lambda: f"call_{random.getrandbits(120):030x}"[:29])


def _functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        tool["function"]
        for tool in tools
        if isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and isinstance(tool.get("function"), dict)
    ]


def _name_of(tool: object) -> str:
    """The function name in a `{"type": "function", "function": {"name": ...}}` (or "")."""
    function = tool.get("function") if isinstance(tool, dict) else None
    return str(function.get("name")) if isinstance(function, dict) else ""


def _named(functions: list[dict[str, Any]], names: set[str]) -> list[dict[str, Any]]:
    return [function for function in functions if function.get("name") in names]


def chosen_functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The functions the answer calls (none: the answer is content), by the rules in the module docstring."""
    functions = _functions(body)
    choice = body.get("tool_choice", "auto")
    if not functions or choice == "none":
        return []
    required = choice == "required"
    if isinstance(choice, dict) and choice.get("type") == "function":
        return _named(functions, {_name_of(choice)})[:1] or functions[:1]
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        allowed = allowed if isinstance(allowed, dict) else {}
        listed = allowed.get("tools")
        names = {_name_of(tool) for tool in listed} if isinstance(listed, list) else set()
        functions = _named(functions, names) or functions
        required = allowed.get("mode") == "required"
    messages = body.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    if not required and last.get("role") in ("tool", "function"):
        return []
    if body.get("parallel_tool_calls") is False:
        return functions[:1]
    return functions[:MAX_PARALLEL_CALLS]


def tool_calls(functions: list[dict[str, Any]]) -> list[ToolCall]:
    """A call to each of `functions`, each with a fresh id and arguments valid against its `parameters`."""
    calls = []
    for function in functions:
        parameters = function.get("parameters")
        arguments = value_for(parameters) if isinstance(parameters, dict) and parameters else {}
        calls.append(ToolCall(name=str(function.get("name", "f")), arguments=msgspec.json.encode(arguments).decode()))
    return calls
