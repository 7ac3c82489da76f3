"""The parity evaluators on answers shaped as the traffic log keeps them (chat, Responses, legacy completions)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from proxy.parity.answers import Call, Pair, request_schema, request_text, text_of, tool_calls_of
from proxy.parity.evaluate import agreement, build_evaluators, evaluate
from proxy.parity.evaluators import (
    DEFAULT_SIMILARITY_THRESHOLD,
    JsonMatch,
    LabelMatch,
    Outcome,
    SemanticMatch,
    ToolCallMatch,
    Verdict,
    normalise_label,
)
from proxy.parity.settings import JsonSpec, NormalisedSpec, SemanticSpec, ToolCallsSpec
from routes.knowledge.embedding import LocalEmbedder


def chat(content: str | None = None, calls: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls is not None:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ]
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def responses(text: str | None = None, calls: list[tuple[str, str]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    output: list[dict[str, Any]] = []
    if text is not None:
        output.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
    output += [{"type": "function_call", "name": name, "arguments": args, "call_id": "c"} for name, args in calls]
    return {"object": "response", "output": output}


async def outcome(evaluator: Any, candidate: dict[str, Any], reference: dict[str, Any], request: Any = None) -> Outcome:
    verdict: Verdict = await evaluator.evaluate(Pair(candidate, reference, request))
    return verdict.outcome


def test_answers_read_every_shape():
    assert text_of(chat("hi")) == "hi"
    assert text_of(chat([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])) == "ab"  # type: ignore[arg-type]
    assert text_of(responses("hello")) == "hello"
    assert text_of({"choices": [{"text": "legacy"}]}) == "legacy"
    assert text_of({"choices": []}) is None
    assert text_of({"error": {"message": "x"}}) is None
    assert tool_calls_of(chat(None, [("f", {"a": 1})])) == [Call("f", '{"a": 1}')]
    assert tool_calls_of(responses(None, [("g", "{}")])) == [Call("g", "{}")]
    legacy = {"choices": [{"message": {"function_call": {"name": "h", "arguments": "{}"}}}]}
    assert tool_calls_of(legacy) == [Call("h", "{}")]
    assert request_text(
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    ) == ("system: be brief\nuser: hi")
    assert request_text({"instructions": "x", "input": "y"}) == "system: x\nuser: y"
    schema = {"type": "object"}
    assert (
        request_schema({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}})
        == schema
    )
    assert request_schema({"text": {"format": {"type": "json_schema", "name": "n", "schema": schema}}}) == schema
    assert request_schema({"response_format": {"type": "json_object"}}) is None


def test_labels_are_normalised_for_case_whitespace_and_punctuation():
    assert normalise_label("  Positive. ") == "positive"
    assert normalise_label("NOT_spam!!") == "not spam"
    assert normalise_label("\uff30\uff4f\uff53\uff49\uff54\uff49\uff56\uff45") == "positive"  # full-width letters, NFKC


async def test_label_match_ties_on_the_same_label_and_loses_on_another():
    normalised, exact = LabelMatch(), LabelMatch(normalised=False)
    assert await outcome(normalised, chat("Positive."), chat("positive")) is Outcome.TIE
    assert await outcome(exact, chat("Positive."), chat("positive")) is Outcome.LOSS
    assert await outcome(exact, chat("positive"), chat("positive")) is Outcome.TIE
    assert await outcome(normalised, chat("negative"), chat("positive")) is Outcome.LOSS
    assert (
        await outcome(LabelMatch(disagree=Outcome.UNDECIDED), chat("negative"), chat("positive")) is Outcome.UNDECIDED
    )
    assert await outcome(normalised, chat(None, [("f", {})]), chat("positive")) is Outcome.UNDECIDED


async def test_json_equality_and_validity():
    equal = JsonMatch()
    assert await outcome(equal, chat('{"a": 1, "b": [1, 2]}'), chat('{"b": [1, 2.0], "a": 1}')) is Outcome.TIE
    assert await outcome(equal, chat('{"a": 1}'), chat('{"a": 2}')) is Outcome.LOSS
    assert await outcome(equal, chat('{"a": true}'), chat('{"a": 1}')) is Outcome.LOSS  # JSON: true is not 1
    assert await outcome(equal, chat("not json"), chat('{"a": 1}')) is Outcome.LOSS
    assert await outcome(equal, chat('{"a": 1}'), chat("{broken")) is Outcome.WIN
    assert await outcome(equal, chat("x"), chat("y")) is Outcome.UNDECIDED


async def test_json_schema_validity_and_field_agreement():
    schema = {
        "type": "object",
        "properties": {"label": {"enum": ["a", "b"]}, "score": {"type": "number"}, "why": {"type": "string"}},
        "required": ["label", "score", "why"],
        "additionalProperties": False,
    }
    by_fields = JsonMatch(schema=schema, fields=("label",))
    good = '{"label": "a", "score": 0.2, "why": "x"}'
    assert (
        await outcome(by_fields, chat('{"label": "a", "score": 0.9, "why": "other words"}'), chat(good)) is Outcome.TIE
    )
    assert await outcome(by_fields, chat('{"label": "b", "score": 0.2, "why": "x"}'), chat(good)) is Outcome.LOSS
    assert await outcome(by_fields, chat('{"label": "c", "score": 0.2, "why": "x"}'), chat(good)) is Outcome.LOSS
    assert await outcome(by_fields, chat(good), chat('{"label": "a"}')) is Outcome.WIN
    nested = JsonMatch(fields=("items.0.id", "missing"))
    assert await outcome(nested, chat('{"items": [{"id": 3}]}'), chat('{"items": [{"id": 3, "x": 1}]}')) is Outcome.TIE
    # The request's own schema is used when the evaluator has none.
    request = {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}
    assert await outcome(JsonMatch(), chat('{"label": "a"}'), chat(good), request) is Outcome.LOSS
    assert (
        await outcome(JsonMatch(use_request_schema=False), chat('{"label": "a"}'), chat(good), request) is Outcome.LOSS
    )
    assert await outcome(JsonMatch(use_request_schema=False), chat(good), chat(good), request) is Outcome.TIE
    unsupported = JsonMatch(schema={"type": "string", "minLength": 3})
    verdict = await unsupported.evaluate(Pair(chat('"ab"'), chat('"abc"')))
    assert verdict.outcome is Outcome.UNDECIDED
    assert "minLength" in verdict.detail


async def test_tool_calls_agree_in_any_order_with_arguments_as_json():
    tools = ToolCallMatch()
    reference = chat(None, [("weather", {"city": "Oslo", "days": 2}), ("time", {"zone": "CET"})])
    swapped = chat(None, [("time", '{"zone":"CET"}'), ("weather", '{"days": 2.0, "city": "Oslo"}')])
    assert await outcome(tools, swapped, reference) is Outcome.TIE
    assert await outcome(
        tools, chat(None, [("weather", {"city": "Bergen", "days": 2}), ("time", {"zone": "CET"})]), reference
    ) is (Outcome.LOSS)
    assert await outcome(tools, chat(None, [("weather", {"city": "Oslo", "days": 2})]), reference) is Outcome.LOSS
    assert await outcome(tools, chat("It is sunny"), reference) is Outcome.LOSS
    assert await outcome(tools, chat(None, [("weather", "{oops")]), chat(None, [("weather", "{}")])) is Outcome.LOSS
    assert await outcome(tools, chat(None, [("weather", "{}")]), chat(None, [("weather", "{oops")])) is Outcome.WIN
    assert (
        await outcome(ToolCallMatch(arguments=False), chat(None, [("weather", {"city": "x"})]), reference)
        is Outcome.LOSS
    )
    names_only = chat(None, [("time", {}), ("weather", {})])
    assert await outcome(ToolCallMatch(arguments=False), names_only, reference) is Outcome.TIE
    assert await outcome(tools, chat("a"), chat("b")) is Outcome.UNDECIDED
    # The same call in a Responses answer and in a chat answer.
    assert await outcome(
        tools, responses(None, [("time", '{"zone": "CET"}')]), chat(None, [("time", {"zone": "CET"})])
    ) is (Outcome.TIE)


async def test_semantic_match_by_the_cosine_of_an_injected_embed_function():
    vectors = {"a": [1.0, 0.0], "a'": [0.96, 0.28], "b": [0.0, 1.0], "zero": [0.0, 0.0]}

    async def embed(texts: Any) -> Any:
        return np.array([vectors[text] for text in texts], dtype=np.float32)

    similar = SemanticMatch(embed, threshold=0.9)
    assert await outcome(similar, chat("a'"), chat("a")) is Outcome.TIE
    assert await outcome(similar, chat("b"), chat("a")) is Outcome.UNDECIDED
    assert await outcome(similar, chat("zero"), chat("a")) is Outcome.UNDECIDED
    assert await outcome(SemanticMatch(embed, threshold=0.97), chat("a'"), chat("a")) is Outcome.UNDECIDED
    assert await outcome(similar, chat(""), chat("a")) is Outcome.UNDECIDED


async def test_semantic_match_with_the_local_model_and_its_default_threshold():
    embedder = LocalEmbedder()

    async def embed(texts: Any) -> Any:
        return (await embedder.embed(texts)).vectors

    similar = SemanticMatch(embed)
    assert similar.threshold == DEFAULT_SIMILARITY_THRESHOLD
    same = "Your alarm is set for seven tomorrow morning."
    assert await outcome(similar, chat(same), chat(same)) is Outcome.TIE
    assert await outcome(similar, chat("Your alarm is set for 7 tomorrow morning"), chat(same)) is Outcome.TIE
    assert await outcome(similar, chat("The capital of Peru is Lima."), chat(same)) is Outcome.UNDECIDED


class Scripted:
    """An evaluator that gives the outcomes it was told, in order, and counts its calls."""

    def __init__(self, name: str, *outcomes: Outcome) -> None:
        self.name, self.outcomes, self.calls = name, list(outcomes), 0

    async def evaluate(self, pair: Pair) -> Verdict:
        self.calls += 1
        return Verdict(self.outcomes.pop(0), self.name)


async def test_the_first_deciding_evaluator_decides_and_the_judge_only_where_none_does():
    pair = Pair(chat("a"), chat("b"))
    first, second, judge = Scripted("first", Outcome.UNDECIDED), Scripted("second", Outcome.LOSS), Scripted("judge")
    result = await evaluate(pair, [first, second], judge)
    assert (result.outcome, result.decided_by, judge.calls) == (Outcome.LOSS, "second", 0)
    judge = Scripted("judge", Outcome.WIN)
    result = await evaluate(pair, [Scripted("only", Outcome.UNDECIDED)], judge)
    assert (result.outcome, result.decided_by, judge.calls) == (Outcome.WIN, "judge", 1)
    result = await evaluate(pair, [Scripted("only", Outcome.UNDECIDED)])
    assert (result.outcome, result.decided_by) == (Outcome.UNDECIDED, None)
    judge = Scripted("judge", Outcome.WIN)
    audited = await evaluate(pair, [Scripted("d", Outcome.TIE)], judge, audit=True)
    assert (audited.outcome, audited.decided_by, audited.judge) == (Outcome.TIE, "d", Verdict(Outcome.WIN, "judge"))


async def test_agreement_counts_only_pairs_both_decided():
    pair = Pair(chat("a"), chat("b"))
    runs = [
        (Outcome.TIE, Outcome.TIE),  # same outcome
        (Outcome.TIE, Outcome.WIN),  # both successes
        (Outcome.LOSS, Outcome.TIE),  # disagree on success
        (Outcome.LOSS, Outcome.LOSS),
        (Outcome.LOSS, Outcome.UNDECIDED),  # the judge did not decide: not counted
    ]
    evaluations = [await evaluate(pair, [Scripted("d", d)], Scripted("j", j), audit=True) for d, j in runs]
    evaluations.append(await evaluate(pair, [Scripted("d", Outcome.UNDECIDED)], Scripted("j", Outcome.WIN)))
    found = agreement(evaluations)
    assert (found.pairs, found.same_outcome, found.same_success) == (4, 2, 3)
    assert found.outcome_rate == 0.5
    assert found.success_rate == 0.75
    assert found.table[Outcome.LOSS, Outcome.TIE] == 1
    assert agreement([]).outcome_rate is None


async def test_evaluators_are_built_from_the_policy_specs_in_order():
    built = build_evaluators([NormalisedSpec(), JsonSpec(fields=["a"], disagree="undecided"), ToolCallsSpec()])
    assert [evaluator.name for evaluator in built] == ["normalised", "json", "tool_calls"]
    assert await outcome(built[1], chat('{"a": 1}'), chat('{"a": 2}')) is Outcome.UNDECIDED
    assert await outcome(built[1], chat('{"a": 1, "b": 1}'), chat('{"a": 1}')) is Outcome.TIE
    with pytest.raises(ValueError, match="embed function"):
        build_evaluators([SemanticSpec()])


def test_the_package_surface_is_pinned():
    import proxy.parity

    assert proxy.parity.__all__ == [
        "DEFAULT_SIMILARITY_THRESHOLD",
        "Action",
        "Agreement",
        "CanarySettings",
        "CanaryState",
        "Evaluation",
        "Evaluator",
        "GateResult",
        "GateVerdict",
        "GuardrailReadings",
        "GuardrailSettings",
        "Judge",
        "JudgeError",
        "JudgeSettings",
        "Outcome",
        "Pair",
        "ParitySettings",
        "Status",
        "Transition",
        "Verdict",
        "agreement",
        "build_evaluators",
        "build_judge",
        "check_blocks",
        "evaluate",
        "gate",
        "gate_of",
        "load_prompt",
        "wilson_interval",
    ]
    assert all(hasattr(proxy.parity, name) for name in proxy.parity.__all__)
