"""`proxy.schemas`: decoding a chat request (with the offending `param`) and rewriting the forwarded body."""

from __future__ import annotations

import json

import pytest

from proxy.errors import InvalidRequestError
from proxy.schemas import ChatMessage, ChatRequest, ContentPart, StreamOptions, decode_chat_request, rewrite_body

MINIMAL = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}'

RICH = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "Réponds en français. 日本語も OK 🚀"},
        {"role": "user", "content": [{"type": "text", "text": "Quel temps fait-il ?"}], "name": "amélie"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function"}]},
    ],
    "temperature": 0.7,
    "top_p": 1,
    "max_tokens": 256,
    "seed": None,
    "logit_bias": {"50256": -100},
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "enum": ["Paris", "Zürich"]}},
                    "required": ["city"],
                },
                "strict": True,
            },
        }
    ],
    "x_vendor_extension": {"nested": [1, 2.5, None, False]},
}


# --- decode_chat_request -------------------------------------------------------------------------------


def test_decode_minimal_body():
    request = decode_chat_request(MINIMAL)
    assert request == ChatRequest(model="gpt-4o-mini", messages=[ChatMessage(role="user", content="Hi")])
    assert request.stream is None
    assert request.stream_options is None
    assert request.wants_usage_chunk is False


def test_decode_accepts_unknown_fields_nulls_and_tools():
    body = {**RICH, "stream": None, "stream_options": None}
    request = decode_chat_request(json.dumps(body).encode())
    assert request.model == "gpt-4o"
    assert request.stream is None
    assert request.stream_options is None
    assert request.messages == [
        ChatMessage(role="system", content="Réponds en français. 日本語も OK 🚀"),
        ChatMessage(role="user", content=[ContentPart(type="text", text="Quel temps fait-il ?")]),
        ChatMessage(role="assistant", content=None),
    ]


def test_decode_stream_with_usage():
    raw = (
        b'{"model":"m","messages":[{"role":"user","content":"x"}],'
        b'"stream":true,"stream_options":{"include_usage":true}}'
    )
    request = decode_chat_request(raw)
    assert request.stream is True
    assert request.stream_options == StreamOptions(include_usage=True)
    assert request.wants_usage_chunk is True


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"model": "m", "messages": [', None),
        (b"not json at all", None),
        (b"", None),
        (b'[{"model": "m"}]', None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 4, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": {"role": "user"}}', "messages"),
        (b'{"model": "m", "messages": "hello"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "messages[0].role"),
        (b'{"model": "m", "messages": [{"role": "user"}, {"content": "x"}]}', "messages[1].role"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
        (b'{"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}', "messages[0].content[0].type"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream_options": 5}', "stream_options"),
        (
            b'{"model": "m", "messages": [{"role": "user"}], "stream_options": {"include_usage": "yes"}}',
            "stream_options.include_usage",
        ),
    ],
)
def test_decode_rejects_with_the_offending_param(raw, param):
    with pytest.raises(InvalidRequestError) as excinfo:
        decode_chat_request(raw)
    error = excinfo.value
    assert type(error) is InvalidRequestError
    assert error.status == 400
    assert error.param == param
    assert " - at `$" not in error.message
    assert "`$" not in error.message
    body = json.loads(error.body())
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert error.message.startswith("Invalid request body: ")
        assert error.message.endswith(f" (at '{param}').")


def test_malformed_json_message():
    with pytest.raises(InvalidRequestError) as excinfo:
        decode_chat_request(b"{")
    assert excinfo.value.message.startswith("We could not parse the JSON body of your request")


def test_array_body_message_names_the_expected_object():
    with pytest.raises(InvalidRequestError) as excinfo:
        decode_chat_request(b"[]")
    assert excinfo.value.message == "Invalid request body: Expected `object`, got `array`."


def test_missing_field_message():
    with pytest.raises(InvalidRequestError) as excinfo:
        decode_chat_request(b'{"model": "m", "messages": [{"content": "x"}]}')
    assert excinfo.value.message == (
        "Invalid request body: Object missing required field `role` (at 'messages[0].role')."
    )


# --- rewrite_body -------------------------------------------------------------------------------------


def test_rewrite_without_changes_returns_the_same_object():
    raw = json.dumps(RICH).encode()
    assert rewrite_body(raw) is raw
    assert rewrite_body(raw, model=None, include_usage=False) is raw


def test_rewrite_to_the_same_model_returns_the_same_object():
    raw = json.dumps(RICH).encode()
    assert rewrite_body(raw, model="gpt-4o") is raw


def test_rewrite_replaces_the_model_and_keeps_everything_else():
    raw = json.dumps(RICH).encode()
    out = rewrite_body(raw, model="ft:gpt-3.5-turbo:acme::abc123")
    assert out != raw
    assert json.loads(out) == {**RICH, "model": "ft:gpt-3.5-turbo:acme::abc123"}


def test_rewrite_preserves_number_types_nulls_and_non_ascii():
    raw = json.dumps(RICH, ensure_ascii=False).encode()
    out = json.loads(rewrite_body(raw, model="gpt-4", include_usage=True))
    assert type(out["temperature"]) is float
    assert out["temperature"] == 0.7
    assert type(out["top_p"]) is int
    assert out["top_p"] == 1
    assert type(out["max_tokens"]) is int
    assert out["max_tokens"] == 256
    assert "seed" in out
    assert out["seed"] is None
    assert out["messages"][0]["content"] == "Réponds en français. 日本語も OK 🚀"
    assert out["messages"][1]["name"] == "amélie"
    assert out["messages"][2]["content"] is None
    assert out["tools"] == RICH["tools"]
    assert out["x_vendor_extension"] == {"nested": [1, 2.5, None, False]}
    assert out == {**RICH, "model": "gpt-4", "stream_options": {"include_usage": True}}


def test_rewrite_adds_include_usage_when_stream_options_is_absent():
    raw = json.dumps({**RICH, "stream": True}).encode()
    out = rewrite_body(raw, include_usage=True)
    assert json.loads(out) == {**RICH, "stream": True, "stream_options": {"include_usage": True}}


def test_rewrite_adds_include_usage_when_stream_options_is_null():
    raw = json.dumps({**RICH, "stream": True, "stream_options": None}).encode()
    out = rewrite_body(raw, include_usage=True)
    assert json.loads(out)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("current", [{}, {"include_usage": False}, {"include_usage": None}])
def test_rewrite_sets_include_usage_and_keeps_other_stream_options(current):
    options = {"include_obfuscation": False, **current}
    raw = json.dumps({**RICH, "stream": True, "stream_options": options}).encode()
    out = rewrite_body(raw, include_usage=True)
    assert json.loads(out) == {
        **RICH,
        "stream": True,
        "stream_options": {"include_obfuscation": False, "include_usage": True},
    }


def test_rewrite_leaves_the_body_alone_when_include_usage_is_already_true():
    raw = json.dumps({**RICH, "stream": True, "stream_options": {"include_usage": True, "x": 1}}).encode()
    assert rewrite_body(raw, include_usage=True) is raw
    assert rewrite_body(raw, model="gpt-4o", include_usage=True) is raw


def test_rewrite_model_and_usage_together():
    raw = MINIMAL
    out = rewrite_body(raw, model="gpt-4", include_usage=True)
    assert json.loads(out) == {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream_options": {"include_usage": True},
    }
