"""Logged chat exchanges as lines of OpenAI's chat fine-tuning format, and the data-preparation guide's checks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from proxy.dataprep import check_training_file, default_epochs, training_price
from proxy.traffic.finetune import Example, Skipped, training_example


def answer(content: str | None = "Paris.", *, finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": content, "refusal": None, **message},
            }
        ],
    }


def example(request: dict[str, Any], response: dict[str, Any]) -> Example:
    made = training_example(request, response)
    assert isinstance(made, Example), made
    return made


def test_a_single_turn_is_system_user_assistant_without_weights() -> None:
    request = {
        "model": "gpt-4",
        "temperature": 0.2,
        "messages": [
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Capital of"}, {"type": "text", "text": "France?"}]},
        ],
    }
    assert example(request, answer()).line == {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Capital of\nFrance?"},
            {"role": "assistant", "content": "Paris."},
        ]
    }


def test_multi_turn_weights_the_earlier_assistant_turns_zero_and_the_answer_one() -> None:
    request = {
        "messages": [
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Capital of France?"},
        ]
    }
    messages = example(request, answer()).line["messages"]
    assert [(m["role"], m.get("weight")) for m in messages] == [
        ("user", None),
        ("assistant", 0),
        ("user", None),
        ("assistant", 1),
    ]
    assert messages[0]["name"] == "ann"


def test_tools_and_tool_calls_are_kept_in_the_format() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    request = {
        "tools": [tool],
        "parallel_tool_calls": False,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{**call, "index": 0}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        ],
    }
    line = example(request, answer("18C and sunny.")).line
    assert line["tools"] == [tool]
    assert line["parallel_tool_calls"] is False
    assert line["messages"][1] == {"role": "assistant", "tool_calls": [call], "weight": 0}
    assert line["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"}
    assert line["messages"][3] == {"role": "assistant", "content": "18C and sunny.", "weight": 1}
    # an answer that is itself a tool call
    first = {"tools": [tool], "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    final = example(first, answer(None, tool_calls=[call], finish="tool_calls")).line["messages"][-1]
    assert final == {"role": "assistant", "tool_calls": [call]}


@pytest.mark.parametrize(
    ("request_body", "response", "reason"),
    [
        ({"messages": []}, answer(), "no messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, answer(), "no user message"),
        ({"messages": [{"role": "user", "content": "x"}]}, answer(finish="length"), "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}]}, answer(None, refusal="no"), "refusal"),
        ({"messages": [{"role": "user", "content": "x"}]}, {"choices": []}, "no choice"),
        ({"messages": [{"role": "user", "content": "x"}]}, answer(None), "neither content nor tool calls"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            answer(),
            "'image_url' part",
        ),
        ({"messages": [{"role": "function", "content": "x"}]}, answer(), "role 'function'"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]},
            answer(),
            "not a function",
        ),
    ],
)
def test_what_cannot_be_trained_on_is_skipped_with_its_reason(
    request_body: dict[str, Any], response: dict[str, Any], reason: str
) -> None:
    made = training_example(request_body, response)
    assert isinstance(made, Skipped)
    assert reason in made.reason


def test_the_prompt_key_ignores_the_answer_and_sampling_but_not_the_messages() -> None:
    base = {"messages": [{"role": "user", "content": "Capital of France?"}]}
    one = example({**base, "temperature": 0}, answer("Paris."))
    two = example({**base, "temperature": 1}, answer("It is Paris."))
    other = example({"messages": [{"role": "user", "content": "Capital of Spain?"}]}, answer("Madrid."))
    assert one.prompt_key == two.prompt_key
    assert one.prompt_key != other.prompt_key


def good_line(question: str = "What is 2 + 2?") -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "4"},
        ]
    }


def test_the_guide_checks_find_each_kind_of_format_error() -> None:
    lines: list[object] = [
        "not an object",
        {"messages": []},
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x", "colour": 1}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
        {"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}, good_line()["messages"][2]]},
    ]
    report = check_training_file(lines, base_model="gpt-4o-mini")
    assert report.format_errors == {
        "data_type": 1,
        "missing_messages_list": 1,
        "message_missing_key": 1,
        "missing_content": 1,
        "message_unrecognized_key": 1,
        "unrecognized_role": 1,
        "example_missing_assistant_message": 1,
        "weight_not_0_or_1": 1,
        "weight_not_on_assistant": 1,
        "tool_message_without_id": 1,
    }
    assert not report.ok


def test_counts_tokens_and_the_training_cost_as_the_guide_does() -> None:
    lines = [good_line(f"What is {n} + {n}?") for n in range(20)]
    report = check_training_file(lines, base_model="gpt-4o-mini-2024-07-18")
    assert report.format_errors == {}
    assert report.examples == 20
    assert report.missing_system == report.missing_user == 0
    assert report.messages.low == report.messages.high == 3
    # 20 examples x 3 epochs = 60 < 100: the guide raises the epochs to 100 // 20 = 5
    assert report.epochs == 5
    per_example = report.tokens.low
    assert report.tokens.high <= per_example + 2  # the questions differ by a digit or two
    assert report.billed_tokens == round(report.tokens.mean * 20)  # none over the 65,536-token limit
    # $3.00 per 1M training tokens on gpt-4o-mini: billed x 5 epochs x 3 / 1,000,000
    assert report.cost == Decimal(report.billed_tokens) * 5 * Decimal("3.00") / 1_000_000
    assert report.ok
    rendered = "\n".join(report.render())
    assert "estimated training cost on gpt-4o-mini-2024-07-18, 5 epochs" in rendered
    assert "fewer than 50 examples" in rendered


def test_the_token_count_follows_the_guide_formula() -> None:
    # one message "a": 3 (per message) + role "user" 1 + content "a" 1; reply priming 3 → 8, with estimate_tokens
    # giving one token for each of "user" and "a"
    from policies.features import estimate_tokens

    assert estimate_tokens("user") == 1
    assert estimate_tokens("a") == 1
    report = check_training_file([{"messages": [{"role": "user", "content": "a"}]}], base_model="gpt-4o")
    assert report.tokens.low == 3 + 1 + 1 + 3


def test_examples_over_the_limit_are_counted_and_billed_up_to_it() -> None:
    long = good_line("word " * 20_000)
    report = check_training_file([long, good_line()], base_model="gpt-3.5-turbo", epochs=2)
    assert report.over_limit == 1
    assert report.max_tokens == 16_385
    assert report.billed_tokens == 16_385 + report.tokens.low
    assert report.epochs == 2


def test_default_epochs_and_training_prices() -> None:
    assert default_epochs(10) == 10
    assert default_epochs(1) == 25
    assert default_epochs(100) == 3
    assert default_epochs(20_000) == 1
    assert training_price("gpt-4.1-mini-2025-04-14") == training_price("gpt-4.1-mini")
    assert training_price("gpt-4.1-2025-04-14") == training_price("gpt-4.1")
    assert training_price("llama") is None
    assert check_training_file([good_line()], base_model="llama").cost is None
    priced = check_training_file([good_line()], base_model="llama", price_per_1m=Decimal(2), epochs=1)
    assert priced.cost == Decimal(priced.billed_tokens) * 2 / 1_000_000
