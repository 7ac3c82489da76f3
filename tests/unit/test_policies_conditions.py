"""`policies.conditions`: every condition key, matching and not, with its explanation; nesting; validation."""

from __future__ import annotations

from typing import Any

import pytest

from policies import PolicyError, RequestFeatures
from policies import features as features_module
from policies.conditions import OPERATORS, compile_condition, compile_when
from policies.errors import where
from proxy.wire.schemas import ChatMessage


def features(text: str = "hello", **fields) -> RequestFeatures:
    messages = fields.pop("messages", (ChatMessage(role="user", content=text),))
    return RequestFeatures(model=fields.pop("model", "gpt-3.5-turbo"), messages=messages, **fields)


def verdict(when: dict[str, Any], request: RequestFeatures) -> tuple[bool, str]:
    """The explanation's verdict and reason, after checking that the fast test agrees with it."""
    condition = compile_condition(when, ("when",))
    check = condition.explain(request)
    assert condition.test(request) is check.matched
    return check.matched, check.why


CASES = [
    # model: glob or list of globs, case-sensitive
    ({"model": "gpt-3.5*"}, {}, True, "model 'gpt-3.5-turbo' matches 'gpt-3.5*'"),
    ({"model": ["gpt-3.5*"]}, {"model": "gpt-4o"}, False, "model 'gpt-4o' matches none of ['gpt-3.5*']"),
    ({"model": ["gpt-4?", "support"]}, {"model": "support"}, True, "model 'support' matches 'support'"),
    ({"model": ["gpt-4?", "support"]}, {"model": "gpt-4o"}, True, "model 'gpt-4o' matches 'gpt-4?'"),
    ({"model": "GPT-3.5*"}, {}, False, "model 'gpt-3.5-turbo' matches none of ['GPT-3.5*']"),
    ({"model": "gpt-[34]*"}, {"model": "gpt-4"}, True, "model 'gpt-4' matches 'gpt-[34]*'"),
    # header: names case-insensitive, values globs
    (
        {"header": {"X-Team": "support"}},
        {"headers": {"x-team": "support"}},
        True,
        "header x-team 'support' matches 'support'",
    ),
    ({"header": {"x-team": "support"}}, {}, False, "header x-team is absent"),
    (
        {"header": {"x-team": ["sales", "ops*"]}},
        {"headers": {"x-team": "support"}},
        False,
        "header x-team 'support' matches none of ['sales', 'ops*']",
    ),
    ({"header": {"x-team": "s*", "x-region": "eu-*"}}, {"headers": {"x-team": "support"}}, False, "all: 1 of 2 hold"),
    # user, caller, metadata
    ({"user": "beta-*"}, {"user": "beta-7"}, True, "user 'beta-7' matches 'beta-*'"),
    ({"user": "beta-*"}, {}, False, "user is absent"),
    ({"caller": ["eval-*"]}, {"caller": "ci"}, False, "caller 'ci' matches none of ['eval-*']"),
    ({"caller": ["eval-*", "ci"]}, {"caller": "ci"}, True, "caller 'ci' matches 'ci'"),
    (
        {"reasoning_effort": ["high", "medium"]},
        {"reasoning_effort": "high"},
        True,
        "reasoning_effort 'high' matches 'high'",
    ),
    ({"reasoning_effort": "high"}, {}, False, "reasoning_effort is absent"),
    (
        {"metadata": {"tier": ["gold", "platinum"]}},
        {"metadata": {"tier": "gold"}},
        True,
        "metadata tier 'gold' matches 'gold'",
    ),
    ({"metadata": {"tier": "gold"}}, {"metadata": {"Tier": "gold"}}, False, "metadata tier is absent"),
    # numbers
    ({"n": {"gte": 2}}, {}, False, "n 1 is not >= 2"),
    ({"n": 3}, {"n": 3}, True, "n 3 == 3"),
    ({"temperature": {"lt": 0.5}}, {}, False, "temperature is not set"),
    ({"temperature": {"lt": 0.5}}, {"temperature": 0.2}, True, "temperature 0.2 < 0.5"),
    ({"temperature": {"gte": 0.2, "lt": 0.8}}, {"temperature": 0.9}, False, "temperature 0.9 is not < 0.8"),
    ({"temperature": {"gte": 0.2, "lt": 0.8}}, {"temperature": 0.5}, True, "temperature 0.5 >= 0.2 and < 0.8"),
    ({"temperature": {"eq": 0}}, {"temperature": 0.0}, True, "temperature 0.0 == 0"),
    # flags
    ({"has_tools": True}, {"has_tools": True}, True, "has_tools is true"),
    ({"has_tools": True}, {}, False, "has_tools is false, not true"),
    ({"has_tools": False}, {}, True, "has_tools is false"),
    ({"stream": True}, {"stream": True}, True, "stream is true"),
    ({"stream": False}, {"stream": True}, False, "stream is true, not false"),
    # response_format
    ({"response_format": "json"}, {"response_format": "json_object"}, True, "response_format 'json_object' is json"),
    ({"response_format": "json"}, {"response_format": "json_schema"}, True, "response_format 'json_schema' is json"),
    ({"response_format": "json"}, {}, False, "response_format absent is not json"),
    (
        {"response_format": "json_schema"},
        {"response_format": "json_object"},
        False,
        "response_format 'json_object' is not json_schema",
    ),
    (
        {"response_format": "json_object"},
        {"response_format": "json_object"},
        True,
        "response_format 'json_object' is json_object",
    ),
    ({"response_format": "text"}, {}, True, "response_format absent is text"),
    ({"response_format": "text"}, {"response_format": "text"}, True, "response_format 'text' is text"),
    (
        {"response_format": "text"},
        {"response_format": "json_object"},
        False,
        "response_format 'json_object' is not text",
    ),
]


@pytest.mark.parametrize(("when", "fields", "matched", "why"), CASES)
def test_condition(when, fields, matched, why):
    assert verdict(when, features(**fields)) == (matched, why)


def test_every_documented_key_has_an_operator():
    assert sorted(OPERATORS) == [
        "all",
        "any",
        "caller",
        "conversation",
        "has_tools",
        "header",
        "last_user_message",
        "metadata",
        "model",
        "n",
        "not",
        "prompt_tokens",
        "reasoning_effort",
        "response_format",
        "retrieval_score",
        "similar_to",
        "stream",
        "team",
        "temperature",
        "user",
    ]


def test_team_matches_the_keys_team():
    assert verdict({"team": "support*"}, features(team="support-eu")) == (True, "team 'support-eu' matches 'support*'")
    assert verdict({"team": "support*"}, features())[0] is False


# --- text ------------------------------------------------------------------------------------------------------

KEYWORDS = {"last_user_message": {"keywords": ["refund", "invoice"]}}


@pytest.mark.parametrize(
    ("text", "matched", "why"),
    [
        ("Where is my REFUND?", True, "last_user_message contains the keyword 'refund'"),
        ("Please send the invoice again", True, "last_user_message contains the keyword 'invoice'"),
        ("I was refunded twice", False, "last_user_message contains none of the keywords ['refund', 'invoice']"),
        ("nothing to see", False, "last_user_message contains none of the keywords ['refund', 'invoice']"),
        ("refund", True, "last_user_message contains the keyword 'refund'"),
    ],
)
def test_keywords_are_whole_words_whatever_the_case(text, matched, why):
    assert verdict(KEYWORDS, features(text)) == (matched, why)


def test_keywords_may_be_phrases_or_have_punctuation_at_their_edges():
    when = {"conversation": {"keywords": ["data protection", "C++"]}}
    assert verdict(when, features("Questions about Data  Protection"))[0] is False  # two spaces: not the phrase
    assert verdict(when, features("our data protection officer")) == (
        True,
        "conversation contains the keyword 'data protection'",
    )
    assert verdict(when, features("I write c++ daily")) == (True, "conversation contains the keyword 'c++'")
    assert verdict(when, features("I write c++x daily"))[0] is False


def test_last_user_message_and_conversation_read_different_text():
    messages = (
        ChatMessage(role="user", content="I want a refund"),
        ChatMessage(role="assistant", content="Sure."),
        ChatMessage(role="user", content="thanks"),
    )
    request = features(messages=messages)
    assert verdict({"last_user_message": {"keywords": ["refund"]}}, request)[0] is False
    assert verdict({"conversation": {"keywords": ["refund"]}}, request) == (
        True,
        "conversation contains the keyword 'refund'",
    )


@pytest.mark.parametrize(
    ("regex", "text", "matched", "why"),
    [
        (
            r"order #\d{5}",
            "Where is order #48213 now?",
            True,
            r"last_user_message matches /order #\d{5}/ at 'order #48213'",
        ),
        (r"order #\d{5}", "Where is order #482?", False, r"last_user_message does not match /order #\d{5}/"),
        (r"^hello", "well, hello", False, "last_user_message does not match /^hello/"),
        (r"(?i)\bcafé\b", "Un CAFÉ, s'il vous plaît", True, r"last_user_message matches /(?i)\bcafé\b/ at 'CAFÉ'"),
        (r"\bplaît\b", "s'il vous plaît", True, r"last_user_message matches /\bplaît\b/ at 'plaît'"),
        (r"\w+ée", "une idée", True, r"last_user_message matches /\w+ée/ at 'idée'"),
        (r"a\sb", "a\x1cb", True, r"last_user_message matches /a\sb/ at 'a\x1cb'"),
        (r"(?i)\u212a", "ok", True, r"last_user_message matches /(?i)\u212a/ at 'k'"),
        (r"(?i)\N{KELVIN SIGN}", "OK", True, r"last_user_message matches /(?i)\N{KELVIN SIGN}/ at 'K'"),
        (r"x" * 50, "x" * 60, True, "last_user_message matches /" + "x" * 50 + "/ at '" + "x" * 37 + "...'"),
    ],
)
def test_regex_is_searched_with_unicode_semantics(regex, text, matched, why):
    assert verdict({"last_user_message": {"regex": regex}}, features(text)) == (matched, why)


def test_ascii_text_matches_as_unicode_text_would():
    regex = r"(?i)\b(manager|supervisor)\b"
    for text, expected in [("Get me your MANAGER", True), ("managerial", False), ("Ça va, manager?", True)]:
        assert verdict({"conversation": {"regex": regex}}, features(text))[0] is expected


def test_keywords_and_regex_together_must_both_hold():
    when = {"last_user_message": {"keywords": ["refund"], "regex": r"\d{5}"}}
    assert verdict(when, features("refund for 12345"))[0] is True
    matched, why = verdict(when, features("refund please"))
    assert (matched, why) == (False, "all: 1 of 2 hold")


# --- prompt tokens and laziness --------------------------------------------------------------------------------


def test_prompt_tokens_compare_the_estimate():
    long = features("word " * 3000)
    tokens = long.prompt_tokens
    assert tokens > 2500
    assert verdict({"prompt_tokens": {"gt": 2500}}, long) == (True, f"prompt_tokens {tokens} > 2500")
    short = features("hi")
    assert verdict({"prompt_tokens": {"gt": 2500}}, short) == (
        False,
        f"prompt_tokens {short.prompt_tokens} is not > 2500",
    )


def test_conditions_stop_at_the_first_verdict_and_lazy_fields_stay_unread(monkeypatch):
    calls = []

    def counting(messages):
        calls.append(1)
        return 10

    monkeypatch.setattr(features_module, "estimate_prompt_tokens", counting)
    request = features()
    assert compile_condition({"any": [{"model": "gpt-*"}, {"prompt_tokens": {"gt": 1}}]}, ("when",)).test(request)
    assert not compile_condition({"model": "claude-*", "prompt_tokens": {"gt": 1}}, ("when",)).test(request)
    assert calls == []
    assert compile_condition({"model": "gpt-*", "prompt_tokens": {"gt": 1}}, ("when",)).test(request)
    assert calls == [1]


# --- all / any / not and the implicit AND -----------------------------------------------------------------------


def test_any_holds_when_one_holds_and_explains_each():
    condition = compile_condition({"any": [{"prompt_tokens": {"gt": 2500}}, {"has_tools": True}]}, ("when",))
    request = features(has_tools=True)
    check = condition.explain(request)
    assert (check.matched, check.why) == (True, "any: 1 of 2 holds")
    assert [(c.matched, c.why) for c in check.children] == [
        (False, f"prompt_tokens {request.prompt_tokens} is not > 2500"),
        (True, "has_tools is true"),
    ]
    assert verdict({"any": [{"stream": True}, {"has_tools": True}]}, features()) == (False, "any: none of 2 hold")
    assert verdict({"any": [{"stream": False}, {"has_tools": False}]}, features()) == (True, "any: 2 of 2 hold")


def test_all_holds_when_every_one_holds():
    when = {"all": [{"model": "gpt-3.5*"}, {"stream": False}, {"n": 1}]}
    assert verdict(when, features()) == (True, "all 3 hold")
    assert verdict(when, features(stream=True)) == (False, "all: 2 of 3 hold")


def test_not_inverts_and_keeps_the_inner_reason():
    condition = compile_condition({"not": {"model": "gpt-4*"}}, ("when",))
    check = condition.explain(features())
    assert (check.matched, check.why) == (True, "not: the condition does not hold")
    assert [(c.matched, c.why) for c in check.children] == [(False, "model 'gpt-3.5-turbo' matches none of ['gpt-4*']")]
    assert verdict({"not": {"model": "gpt-3*"}}, features()) == (False, "not: the condition holds")


def test_nesting_all_any_not():
    when = {
        "all": [
            {"any": [{"model": "gpt-4*"}, {"header": {"x-team": "support"}}]},
            {"not": {"any": [{"stream": True}, {"user": "blocked-*"}]}},
        ]
    }
    assert verdict(when, features(headers={"x-team": "support"}))[0] is True
    assert verdict(when, features(headers={"x-team": "support"}, user="blocked-1"))[0] is False
    assert verdict(when, features(model="gpt-4o", stream=False))[0] is True
    assert verdict(when, features(model="gpt-3.5", stream=False))[0] is False


def test_several_keys_in_a_mapping_must_all_hold():
    when = {"model": "gpt-3.5*", "stream": True}
    assert len(compile_when(when, ("when",))) == 2
    assert verdict(when, features(stream=True)) == (True, "all 2 hold")
    assert verdict(when, features()) == (False, "all: 1 of 2 hold")
    assert verdict({"any": [{"model": "gpt-4*", "stream": True}, {"n": 2}]}, features(stream=True))[0] is False


@pytest.mark.parametrize(
    ("when", "label"),
    [
        ({"prompt_tokens": {"gt": 2500}}, "prompt_tokens > 2500"),
        (
            {"any": [{"prompt_tokens": {"gt": 2500}}, {"has_tools": True}]},
            "any(prompt_tokens > 2500; has_tools is true)",
        ),
        ({"not": {"model": "gpt-4*"}}, "not(model matches 'gpt-4*')"),
        ({"model": ["a", "b*"], "stream": True}, "model matches any of ['a', 'b*'] and stream is true"),
        ({"all": [{"n": {"gte": 2, "lte": 4}}]}, "n >= 2 and <= 4"),
        (
            {"conversation": {"keywords": ["Refund"], "regex": "x+"}},
            "conversation has a keyword in ['refund'] and conversation matches /x+/",
        ),
        (
            {"header": {"X-Team": "s"}, "metadata": {"tier": ["g"]}},
            "header x-team matches 's' and metadata tier matches 'g'",
        ),
        ({"response_format": "json"}, "response_format is json"),
        ({"user": "u", "caller": "c"}, "user matches 'u' and caller matches 'c'"),
    ],
)
def test_labels_read_like_the_yaml(when, label):
    assert compile_condition(when, ("when",)).label == label


# --- validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "message", "path"),
    [
        ({}, "when: expected a non-empty mapping of conditions, got an empty mapping", ("when",)),
        (None, "when: expected a non-empty mapping of conditions, got nothing", ("when",)),
        ({1: "x"}, "when: keys must be strings, got 1", ("when",)),
        (
            {"modle": "x"},
            "when.modle: unknown condition 'modle' (did you mean 'model'?); expected one of: all, any,",
            ("when", "modle"),
        ),
        (
            {"model": 4},
            "when.model: expected a glob or a non-empty list of globs (strings; quote numbers), got int 4",
            ("when", "model"),
        ),
        ({"model": []}, "when.model: expected a glob or a non-empty list of globs", ("when", "model")),
        ({"user": ["a", None]}, "when.user: expected a glob or a non-empty list of globs", ("when", "user")),
        (
            {"header": "x-team"},
            "when.header: expected a non-empty mapping of header names to globs, got str 'x-team'",
            ("when", "header"),
        ),
        ({"header": {"x-version": 2}}, "when.header.x-version: expected a glob", ("when", "header", "x-version")),
        ({"metadata": {}}, "when.metadata: expected a non-empty mapping", ("when", "metadata")),
        (
            {"last_user_message": {"regex": "(unclosed"}},
            "when.last_user_message.regex: bad regular expression /(unclosed/: missing ), unterminated subpattern at "
            "position 0",
            ("when", "last_user_message", "regex"),
        ),
        (
            {"conversation": {"regex": ""}},
            "when.conversation.regex: expected a regular expression (a non-empty string), got str ''",
            ("when", "conversation", "regex"),
        ),
        (
            {"conversation": {"keyword": ["a"]}},
            "when.conversation.keyword: unknown conversation test 'keyword' (did you mean 'keywords'?)",
            ("when", "conversation", "keyword"),
        ),
        (
            {"conversation": {"keywords": []}},
            "when.conversation.keywords: expected a non-empty list of keywords (non-empty strings), got an empty list",
            ("when", "conversation", "keywords"),
        ),
        (
            {"conversation": {"keywords": ["ok", " "]}},
            "when.conversation.keywords: expected a non-empty list of keywords",
            ("when", "conversation", "keywords"),
        ),
        (
            {"conversation": "refund"},
            "when.conversation: expected a non-empty mapping of keywords and/or regex, got str 'refund'",
            ("when", "conversation"),
        ),
        (
            {"prompt_tokens": {"gtt": 5}},
            "when.prompt_tokens.gtt: unknown operator 'gtt' (did you mean 'gt'?); expected one of: gt, gte, lt, lte, "
            "eq",
            ("when", "prompt_tokens", "gtt"),
        ),
        (
            {"prompt_tokens": {"gt": "5"}},
            "when.prompt_tokens.gt: expected a number, got str '5'",
            ("when", "prompt_tokens", "gt"),
        ),
        ({"n": {"eq": True}}, "when.n.eq: expected a number, got bool True", ("when", "n", "eq")),
        (
            {"temperature": "hot"},
            "when.temperature: expected a non-empty mapping of operators to numbers (gt, gte, lt, lte, eq), got str "
            "'hot'",
            ("when", "temperature"),
        ),
        ({"has_tools": "yes"}, "when.has_tools: expected true or false, got str 'yes'", ("when", "has_tools")),
        ({"stream": 1}, "when.stream: expected true or false, got int 1", ("when", "stream")),
        (
            {"response_format": "yaml"},
            "when.response_format: expected one of json, json_object, json_schema, text, got str 'yaml'",
            ("when", "response_format"),
        ),
        ({"any": []}, "when.any: expected a non-empty list of conditions, got an empty list", ("when", "any")),
        ({"all": {"model": "x"}}, "when.all: expected a non-empty list of conditions, got a mapping", ("when", "all")),
        ({"not": []}, "when.not: expected a non-empty mapping of conditions, got an empty list", ("when", "not")),
        (
            {"any": [{"model": "x"}, {"prompt_tokens": {"gtt": 1}}]},
            "when.any[1].prompt_tokens.gtt: unknown operator 'gtt'",
            ("when", "any", 1, "prompt_tokens", "gtt"),
        ),
        (
            {"all": [{"not": {"nope": 1}}]},
            "when.all[0].not.nope: unknown condition 'nope'",
            ("when", "all", 0, "not", "nope"),
        ),
    ],
)
def test_invalid_conditions_name_the_path(when, message, path):
    with pytest.raises(PolicyError) as caught:
        compile_condition(when, ("when",))
    assert str(caught.value).startswith(message)
    assert caught.value.path == path


def test_where_spells_a_path():
    assert where(("when", "any", 1, "prompt_tokens")) == "when.any[1].prompt_tokens"
    assert where(("when",)) == "when"
    assert where(()) == ""
