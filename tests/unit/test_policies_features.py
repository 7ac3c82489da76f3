"""`policies.features`: what `extract_features` takes from a request, the lazy text fields, the token estimate."""

# ruff: noqa: RUF001 - Chinese text, with its full-width punctuation
from __future__ import annotations

import dataclasses

import msgspec
import pytest

from policies import RequestFeatures, extract_features
from policies import features as features_module
from policies.features import MESSAGE_OVERHEAD, REPLY_OVERHEAD, estimate_prompt_tokens, estimate_tokens
from proxy.wire.schemas import ChatMessage, ChatRequest, ContentPart, ResponseFormat, message_text


def chat(*messages: ChatMessage, **fields) -> ChatRequest:
    return ChatRequest(model=fields.pop("model", "gpt-3.5-turbo"), messages=list(messages), **fields)


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def test_the_request_fields_are_copied():
    request = chat(
        user("hi"),
        model="gpt-4o",
        stream=True,
        user="alice",
        metadata={"tier": "gold"},
        n=3,
        temperature=0.2,
        response_format=ResponseFormat(type="json_schema"),
    )
    features = extract_features(request, {"X-Team": "Support", "content-type": "application/json"}, "billing-svc")
    assert features.model == "gpt-4o"
    assert features.headers == {"x-team": "Support", "content-type": "application/json"}
    assert features.user == "alice"
    assert features.metadata == {"tier": "gold"}
    assert features.caller == "billing-svc"
    assert features.stream is True
    assert features.n == 3
    assert features.temperature == 0.2
    assert features.has_tools is False
    assert features.response_format == "json_schema"


def test_absent_fields_take_their_defaults():
    features = extract_features(chat(user("hi")), {}, None)
    assert features.user is None
    assert features.caller is None
    assert features.metadata == {}
    assert features.stream is False
    assert features.n == 1
    assert features.temperature is None
    assert features.response_format is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, False),
        ({"tools": []}, False),
        ({"tools": [msgspec.Raw(b'{"type": "function"}')]}, True),
        ({"functions": [msgspec.Raw(b'{"name": "f"}')]}, True),
    ],
)
def test_has_tools_means_tools_or_functions_present(fields, expected):
    assert extract_features(chat(user("hi"), **fields), {}, None).has_tools is expected


def test_features_are_frozen():
    features = extract_features(chat(user("hi")), {}, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        features.model = "gpt-4"  # type: ignore[misc]


# --- the text fields -----------------------------------------------------------------------------------------


def test_last_user_text_is_the_last_user_message():
    request = chat(
        ChatMessage(role="system", content="Be brief."),
        user("first question"),
        ChatMessage(role="assistant", content="an answer"),
        user("second question"),
        ChatMessage(role="assistant", content="another answer"),
    )
    features = extract_features(request, {}, None)
    assert features.last_user_text == "second question"
    assert features.last_user_lower == "second question"
    assert features.conversation_text == "Be brief.\nfirst question\nan answer\nsecond question\nanother answer"


def test_text_parts_are_joined_and_images_skipped():
    parts = [
        ContentPart(type="text", text="What is in"),
        ContentPart(type="image_url"),
        ContentPart(type="text", text="this picture?"),
    ]
    message = ChatMessage(role="user", content=parts)
    assert message_text(message) == "What is in\nthis picture?"
    assert extract_features(chat(message), {}, None).last_user_text == "What is in\nthis picture?"


def test_no_user_message_and_no_content_give_empty_text():
    request = chat(ChatMessage(role="system", content="Be brief."), ChatMessage(role="assistant", content=None))
    features = extract_features(request, {}, None)
    assert features.last_user_text == ""
    assert features.conversation_text == "Be brief.\n"


def test_lower_case_variants_are_lower_case():
    features = extract_features(chat(user("Where Is My REFUND?")), {}, None)
    assert features.last_user_lower == "where is my refund?"
    assert features.conversation_lower == "where is my refund?"


def test_prompt_tokens_are_computed_once_and_only_when_asked(monkeypatch):
    calls = []

    def counting(messages):
        calls.append(len(messages))
        return 42

    monkeypatch.setattr(features_module, "estimate_prompt_tokens", counting)
    features = extract_features(chat(user("hi"), user("again")), {}, None)
    assert calls == []
    assert features.prompt_tokens == 42
    assert features.prompt_tokens == 42
    assert calls == [2]


def test_features_can_be_built_directly():
    features = RequestFeatures(model="gpt-4", messages=(user("hello there"),), user="bob")
    assert features.last_user_text == "hello there"
    assert features.headers == {}
    assert features.prompt_tokens == REPLY_OVERHEAD + MESSAGE_OVERHEAD + estimate_tokens("hello there")


# --- the token estimate --------------------------------------------------------------------------------------

# Counts from tiktoken's cl100k_base (tests/bench/token_estimate.py measures the estimate on a larger sample).
REFERENCE = {
    "prose": (
        "The committee met on Thursday afternoon to review the budget proposal for the coming fiscal year. After a "
        "long discussion about the rising cost of maintenance, the members agreed to postpone the renovation of the "
        "east wing until the spring, when contractors are usually less busy and quotes tend to be lower.",
        56,
    ),
    "code": (
        "def fetch(url: str, *, retries: int = 3) -> bytes:\n    for attempt in range(retries):\n        try:\n"
        "            return urllib.request.urlopen(url, timeout=10).read()\n        except OSError:\n"
        '            time.sleep(2 ** attempt)\n    raise RuntimeError(f"giving up on {url}")\n',
        64,
    ),
    "json": (
        '{"id": "ord_1a2b3c4d", "items": [{"sku": "SKU-0042", "qty": 2, "price": 19.99}, '
        '{"sku": "SKU-1337", "qty": 1, "price": 249.0}], "status": "shipped"}',
        71,
    ),
    "chinese": (
        "人工智能技术的快速发展正在改变许多行业的工作方式。企业需要在提高效率的同时，认真考虑数据安全、隐私保护以及员工培训等问题。",
        64,
    ),
}


@pytest.mark.parametrize(("text", "real"), list(REFERENCE.values()), ids=list(REFERENCE))
def test_the_estimate_is_close_to_cl100k(text, real):
    assert abs(estimate_tokens(text) - real) / real < 0.15


def test_the_estimate_of_nothing_is_nothing_and_of_a_word_is_one():
    assert estimate_tokens("") == 0
    assert estimate_tokens("hi") == 1


def test_the_estimate_grows_with_the_text():
    sentence = REFERENCE["prose"][0]
    assert estimate_tokens(" ".join([sentence] * 10)) == pytest.approx(10 * estimate_tokens(sentence), rel=0.02)


def test_prompt_tokens_add_the_per_message_overhead():
    assert estimate_prompt_tokens([]) == REPLY_OVERHEAD
    assert estimate_prompt_tokens([ChatMessage(role="assistant")]) == REPLY_OVERHEAD + MESSAGE_OVERHEAD
    messages = [ChatMessage(role="system", content="Be brief."), user("hello"), ChatMessage(role="assistant")]
    separately = REPLY_OVERHEAD + 3 * MESSAGE_OVERHEAD + estimate_tokens("Be brief.") + estimate_tokens("hello")
    assert abs(estimate_prompt_tokens(messages) - separately) <= 1


def test_the_newlines_joining_messages_are_not_counted():
    one = [user("first line\nsecond line")]
    two = [user("first line"), user("second line")]
    assert estimate_prompt_tokens(two) - estimate_prompt_tokens(one) == MESSAGE_OVERHEAD - 1
