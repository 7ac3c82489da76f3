"""`PolicyEngine`: first match wins, sticky and random splits, shadow sampling, laziness, `explain`."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

import pytest

from policies import Decision, PolicyEngine, RequestFeatures, load_policy
from policies import features as features_module
from policies.checks import Check
from policies.conditions import compile_condition
from policies.engine import Rule
from proxy.wire.schemas import ChatMessage

ROUTES = ["gpt4", "support-ft", "support-ft-v2", "docs"]


def engine(rules: list[Any], rng: random.Random | None = None) -> PolicyEngine:
    return load_policy(rules, ROUTES, locate=lambda path: "policy.yaml:1", rng=rng or random.Random(0))


def features(text: str = "hello", **fields) -> RequestFeatures:
    messages = (ChatMessage(role="user", content=text),)
    return RequestFeatures(model=fields.pop("model", "gpt-3.5-turbo"), messages=messages, **fields)


DEFAULT = {"name": "default", "route": "support-ft", "fallback": ["gpt4"]}


# --- first match -----------------------------------------------------------------------------------------------


def test_the_first_matching_rule_wins():
    policy = engine(
        [
            {"name": "gpt4-exact", "when": {"model": "gpt-4*"}, "route": "gpt4"},
            {"name": "any-gpt", "when": {"model": "gpt-*"}, "route": "docs", "fallback": ["gpt4"]},
            DEFAULT,
        ]
    )
    assert policy.decide(features(model="gpt-4o")) == Decision(
        route="gpt4", rule="gpt4-exact", reason="model matches 'gpt-4*'", fallbacks=(), shadow=None
    )
    assert policy.decide(features(model="gpt-3.5-turbo")) == Decision(
        route="docs", rule="any-gpt", reason="model matches 'gpt-*'", fallbacks=("gpt4",), shadow=None
    )
    assert policy.decide(features(model="claude")) == Decision(
        route="support-ft", rule="default", reason="catch-all", fallbacks=("gpt4",), shadow=None
    )


def test_the_reason_quotes_every_condition_of_the_rule():
    policy = engine(
        [
            {
                "name": "hard",
                "when": {"any": [{"n": {"gt": 1}}, {"has_tools": True}], "stream": False},
                "route": "gpt4",
            },
            DEFAULT,
        ]
    )
    assert policy.decide(features(has_tools=True)).reason == "any(n > 1; has_tools is true) and stream is false"


def test_rules_and_route_names():
    policy = engine(
        [
            {"name": "canary", "when": {"user": "u*"}, "split": {"support-ft": 1, "support-ft-v2": 1}},
            {
                "name": "json",
                "when": {"response_format": "json"},
                "route": "docs",
                "shadow": {"route": "gpt4", "sample": 0.5},
            },
            {"name": "default", "route": "support-ft"},
        ]
    )
    assert policy.rules == ("canary", "json", "default")
    assert policy.route_names == frozenset({"support-ft", "support-ft-v2", "docs", "gpt4"})
    assert repr(policy) == "PolicyEngine(rules=['canary', 'json', 'default'])"


def test_decisions_are_frozen_values():
    decision = engine([DEFAULT]).decide(features())
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.route = "gpt4"  # type: ignore[misc]
    assert engine([DEFAULT]).decide(features()) == decision


def test_the_engine_needs_a_default_last():
    with pytest.raises(ValueError, match="the last one without conditions"):
        PolicyEngine([], random.Random())
    rule = Rule(name="only", conditions=(compile_condition({"stream": True}, ("when",)),), routes=(("gpt4", 1.0),))
    with pytest.raises(ValueError, match="the last one without conditions"):
        PolicyEngine([rule], random.Random())


# --- laziness --------------------------------------------------------------------------------------------------


@pytest.fixture
def estimates(monkeypatch) -> list[int]:
    calls: list[int] = []

    def counting(messages):
        calls.append(1)
        return 100

    monkeypatch.setattr(features_module, "estimate_prompt_tokens", counting)
    return calls


def test_prompt_tokens_are_not_estimated_when_no_rule_asks(estimates):
    policy = engine([{"name": "gpt4", "when": {"model": "gpt-4*"}, "route": "gpt4"}, DEFAULT])
    for model in ("gpt-4", "gpt-3.5-turbo"):
        policy.decide(features(model=model))
    assert estimates == []


def test_prompt_tokens_are_estimated_once_however_many_rules_ask(estimates):
    policy = engine(
        [
            {"name": "long", "when": {"prompt_tokens": {"gt": 2500}}, "route": "gpt4"},
            {"name": "medium", "when": {"prompt_tokens": {"gt": 500}}, "route": "docs"},
            {"name": "short", "when": {"any": [{"stream": True}, {"prompt_tokens": {"lt": 50}}]}, "route": "docs"},
            DEFAULT,
        ]
    )
    assert policy.decide(features()).rule == "default"
    assert estimates == [1]


def test_a_rule_that_matched_earlier_spares_the_estimate(estimates):
    policy = engine(
        [
            {"name": "tools", "when": {"has_tools": True}, "route": "gpt4"},
            {"name": "long", "when": {"prompt_tokens": {"gt": 10}}, "route": "gpt4"},
            DEFAULT,
        ]
    )
    assert policy.decide(features(has_tools=True)).rule == "tools"
    assert estimates == []


# --- splits ----------------------------------------------------------------------------------------------------

CANARY = {"name": "canary", "split": {"support-ft": 90, "support-ft-v2": 10}}


def test_a_split_is_sticky_per_user():
    policy = engine([CANARY], rng=random.Random(1))
    for index in range(20):
        routes = {policy.decide(features(user=f"user-{index}", caller=f"caller-{n}")).route for n in range(100)}
        assert len(routes) == 1


def test_a_split_falls_back_to_the_caller_then_to_random():
    policy = engine([CANARY], rng=random.Random(1))
    by_caller = {policy.decide(features(caller="billing")).route for _ in range(100)}
    assert len(by_caller) == 1
    assert policy.decide(features(caller="billing")).reason.endswith("sticky by caller)")
    assert policy.decide(features(user="alice")).reason.endswith("sticky by user)")
    assert policy.decide(features()).reason.endswith("random)")


def test_sticky_caller_prefers_the_caller():
    policy = engine([{**CANARY, "sticky": "caller"}])
    routes = {policy.decide(features(user=f"user-{n}", caller="billing")).route for n in range(200)}
    assert len(routes) == 1
    assert policy.decide(features(user="alice", caller="billing")).reason.endswith("sticky by caller)")
    assert policy.decide(features(user="alice")).reason.endswith("sticky by user)")


def test_sticky_user_is_the_default_order():
    policy = engine([{**CANARY, "sticky": "user"}])
    routes = {policy.decide(features(user="alice", caller=f"caller-{n}")).route for n in range(200)}
    assert len(routes) == 1


@pytest.mark.parametrize(
    "weights", [{"support-ft": 90, "support-ft-v2": 10}, {"support-ft": 50, "support-ft-v2": 30, "docs": 20}]
)
def test_distinct_users_spread_by_the_weights(weights):
    policy = engine([{"name": "split", "split": weights}])
    counts = Counter(policy.decide(features(user=f"user-{index}")).route for index in range(10_000))
    total = sum(weights.values())
    for route, weight in weights.items():
        assert abs(counts[route] / 10_000 - weight / total) <= 0.02


def test_a_sticky_split_draws_nothing_from_the_random_generator():
    rng = random.Random(3)
    policy = engine([CANARY], rng=rng)
    state = rng.getstate()
    for index in range(50):
        policy.decide(features(user=f"u{index}"))
    assert rng.getstate() == state


def test_without_user_or_caller_the_split_is_random_from_the_injected_generator():
    first = engine([CANARY], rng=random.Random(42))
    second = engine([CANARY], rng=random.Random(42))
    draws = [first.decide(features()).route for _ in range(10_000)]
    assert draws == [second.decide(features()).route for _ in range(10_000)]
    assert abs(draws.count("support-ft-v2") / 10_000 - 0.10) <= 0.02
    assert draws != [engine([CANARY], rng=random.Random(43)).decide(features()).route for _ in range(10_000)]


def test_growing_the_canary_keeps_the_users_it_had():
    small = engine([{"name": "canary", "split": {"support-ft": 90, "support-ft-v2": 10}}])
    large = engine([{"name": "canary", "split": {"support-ft": 80, "support-ft-v2": 20}}])
    users = [f"user-{index}" for index in range(2000)]
    in_small = {u for u in users if small.decide(features(user=u)).route == "support-ft-v2"}
    in_large = {u for u in users if large.decide(features(user=u)).route == "support-ft-v2"}
    assert in_small < in_large


def test_each_split_rule_hashes_on_its_own():
    first = engine([{"name": "one", "split": {"support-ft": 1, "support-ft-v2": 1}}])
    second = engine([{"name": "two", "split": {"support-ft": 1, "support-ft-v2": 1}}])
    users = [f"user-{index}" for index in range(200)]
    assert [first.decide(features(user=u)).route for u in users] != [
        second.decide(features(user=u)).route for u in users
    ]


def test_a_split_never_falls_back_to_the_route_it_picked():
    policy = engine(
        [{"name": "ab", "split": {"support-ft": 1, "support-ft-v2": 1}, "fallback": ["support-ft", "gpt4"]}]
    )
    fallbacks = {}
    for index in range(100):
        decision = policy.decide(features(user=f"user-{index}"))
        fallbacks[decision.route] = decision.fallbacks
    assert fallbacks == {"support-ft": ("gpt4",), "support-ft-v2": ("support-ft", "gpt4")}


def test_split_reasons_name_the_share():
    policy = engine(
        [{"name": "canary", "when": {"model": "gpt-3.5*"}, "split": {"support-ft": 90, "support-ft-v2": 10}}, DEFAULT]
    )
    reasons = {policy.decide(features(user=f"u{index}")).reason for index in range(200)}
    assert reasons == {
        "model matches 'gpt-3.5*'; split: support-ft (90%, sticky by user)",
        "model matches 'gpt-3.5*'; split: support-ft-v2 (10%, sticky by user)",
    }


# --- shadow copies ---------------------------------------------------------------------------------------------


def test_shadow_copies_are_sampled_at_the_configured_rate():
    policy = engine([{**DEFAULT, "shadow": {"route": "gpt4", "sample": 0.05}, "fallback": []}], rng=random.Random(7))
    decisions = [policy.decide(features(user="alice")) for _ in range(10_000)]
    shadowed = [d for d in decisions if d.shadow is not None]
    assert 0.04 <= len(shadowed) / 10_000 <= 0.06
    assert {d.shadow for d in shadowed} == {"gpt4"}
    assert {d.route for d in decisions} == {"support-ft"}


def test_a_full_sample_shadows_every_request_without_drawing():
    rng = random.Random(7)
    policy = engine([{"name": "default", "route": "support-ft", "shadow": {"route": "gpt4"}}], rng=rng)
    state = rng.getstate()
    assert {policy.decide(features()).shadow for _ in range(100)} == {"gpt4"}
    assert rng.getstate() == state


def test_a_split_never_shadows_to_the_route_it_picked():
    policy = engine([{"name": "ab", "split": {"support-ft": 1, "gpt4": 1}, "shadow": {"route": "gpt4", "sample": 1}}])
    pairs = {(d.route, d.shadow) for d in (policy.decide(features(user=f"u{i}")) for i in range(100))}
    assert pairs == {("support-ft", "gpt4"), ("gpt4", None)}


# --- explain ---------------------------------------------------------------------------------------------------

POLICY = [
    {"name": "long-or-tools", "when": {"any": [{"prompt_tokens": {"gt": 2500}}, {"has_tools": True}]}, "route": "gpt4"},
    {
        "name": "support",
        "when": {"model": ["gpt-3.5*", "support"], "header": {"x-team": "support"}},
        "route": "support-ft-v2",
    },
    {"name": "json", "when": {"response_format": "json"}, "route": "docs"},
    DEFAULT,
]


def test_explain_gives_the_decision_and_each_rule_until_the_match():
    policy = engine(POLICY)
    request = features(headers={"x-team": "support"})
    explanation = policy.explain(request)
    assert explanation.decision == policy.decide(request)
    assert [(trace.rule, trace.matched) for trace in explanation.rules] == [("long-or-tools", False), ("support", True)]
    tokens = request.prompt_tokens
    assert explanation.rules[0].checks == (
        Check(
            False,
            "any: none of 2 hold",
            (Check(False, f"prompt_tokens {tokens} is not > 2500"), Check(False, "has_tools is false, not true")),
        ),
    )
    assert explanation.rules[1].checks == (
        Check(True, "model 'gpt-3.5-turbo' matches 'gpt-3.5*'"),
        Check(True, "header x-team 'support' matches 'support'"),
    )


def test_explain_render():
    request = features(model="gpt-4o", response_format="text")
    text = engine(POLICY).explain(request).render()
    assert text == "\n".join(
        [
            "route: support-ft",
            "rule: default",
            "reason: catch-all",
            "fallbacks: gpt4",
            "rules, in order:",
            "  long-or-tools: no match",
            "    - any: none of 2 hold",
            f"      - prompt_tokens {request.prompt_tokens} is not > 2500",
            "      - has_tools is false, not true",
            "  support: no match",
            "    - model 'gpt-4o' matches none of ['gpt-3.5*', 'support']",
            "    - header x-team is absent",
            "  json: no match",
            "    - response_format 'text' is not json",
            "  default: matched (catch-all)",
        ]
    )


def test_explain_render_shows_a_shadow_copy():
    policy = engine([{"name": "default", "route": "support-ft", "shadow": {"route": "gpt4"}}])
    assert "shadow copy to: gpt4" in policy.explain(features()).render().splitlines()


def test_explain_and_decide_agree_on_many_requests():
    first = engine(POLICY, rng=random.Random(5))
    second = engine(POLICY, rng=random.Random(5))
    requests = [
        features(model=model, headers=headers, has_tools=tools, response_format=fmt)
        for model in ("gpt-3.5-turbo", "gpt-4o", "support")
        for headers in ({}, {"x-team": "support"}, {"x-team": "sales"})
        for tools in (False, True)
        for fmt in (None, "json_object", "text")
    ]
    for request in requests:
        assert first.explain(request).decision == second.decide(request)
