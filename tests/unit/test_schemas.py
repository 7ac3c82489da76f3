"""`proxy.wire.schemas`: decoding a chat request (with the offending `param`) and rewriting the forwarded body."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from proxy.cache.keys import fields_key
from proxy.endpoints.chat import CHAT
from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import MAX_DEPTH
from proxy.wire.schemas import ChatBody, ChatMessage, ChatRequest, ContentPart, StreamOptions, decode_chat_body


def decode_chat_request(raw: bytes) -> ChatRequest:
    return decode_chat_body(raw).view


def rewrite_body(raw: bytes, *, model: str | None = None, include_usage: bool = False) -> bytes:
    return CHAT.upstream_body(decode_chat_body(raw), model=model, stream=include_usage)


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


# --- decode_chat_body -------------------------------------------------------------------------------


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


# --- ChatBody.rewritten -------------------------------------------------------------------------------------


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


# --- hostile bodies: valid JSON (or nearly) that a second reader used to fail on (issue 11, point 5) ---------


def with_member(value: bytes, where: str = "x_unknown") -> bytes:
    """A valid request with `value` (raw JSON) put at `where`: an unknown field, a message's key, a tool."""
    message = b'{"role":"user","content":"hi"' + (b',"name":' + value if where == "message" else b"") + b"}"
    raw = b'{"model":"gpt-4o","messages":[' + message + b"]"
    if where == "x_unknown":
        raw += b',"x_unknown":' + value
    elif where == "tools":
        raw += b',"tools":[{"type":"function","function":{"name":"f","parameters":{"x":' + value + b"}}}]"
    return raw + b"}"


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


HOSTILE = {
    "1e400": (b"1e400", "number_out_of_range", "a number, which is out of range"),
    "-1e400": (b"-1e400", "number_out_of_range", "a number, which is out of range"),
    "10,000 digits": (b"7" * 10_000, "number_out_of_range", "an integer of more than"),
    "400-digit float": (b"9" * 400 + b".5", "number_out_of_range", "a number, which is out of range"),
    "nesting 979": (nested(979), "nested_too_deeply", "more than 128 levels deep"),
    "nesting 129 with the body": (b"", "nested_too_deeply", "more than 128 levels deep"),
    "invalid UTF-8": (b'"caf\xe9"', "invalid_utf8", "not valid UTF-8"),
    "a UTF-8 surrogate": (b'"\xed\xa0\x80"', "invalid_utf8", "not valid UTF-8"),
    "an overlong UTF-8 slash": (b'"\xc0\xaf"', "invalid_utf8", "not valid UTF-8"),
}


@pytest.mark.parametrize("where", ["x_unknown", "message", "tools"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_value_anywhere_is_a_400_naming_the_member(name, where):
    value, code, says = HOSTILE[name]
    above = {"x_unknown": 1, "message": 3, "tools": 5}[where]  # levels of the body above the value
    if not value:
        value = nested(MAX_DEPTH + 1 - above)
        decode_chat_body(with_member(nested(MAX_DEPTH - above), where))  # one level less is accepted
    with pytest.raises(InvalidRequestError) as caught:
        decode_chat_body(with_member(value, where))
    error = caught.value
    assert error.status == 400
    assert error.instance_code == code
    member = {"x_unknown": "x_unknown", "message": "messages", "tools": "tools"}[where]
    if code == "nested_too_deeply" and len(value) > 1_500:  # past the stack, the decode cannot say where
        assert error.param in (member, None)
    else:
        assert error.param == member
    assert says in error.message
    assert json.loads(error.body())["error"]["param"] == error.param


@pytest.mark.parametrize("levels", [1_000, 5_000, 100_000])
def test_nesting_beyond_the_stack_is_the_same_400(levels):
    with pytest.raises(InvalidRequestError) as caught:
        decode_chat_body(with_member(nested(levels)))
    assert caught.value.instance_code == "nested_too_deeply"
    assert "more than 128 levels deep" in caught.value.message


def test_a_body_with_two_faults_is_still_a_400():
    raw = b'{"a":"\xff","b":' + nested(3_000) + b',"model":"m","messages":[{"role":"user"}]}'
    with pytest.raises(InvalidRequestError) as caught:
        decode_chat_body(raw)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "value",
    [
        b"1e308",
        b"-1.7976931348623157e308",
        b"1e-400",  # underflows to 0.0: a value, not an error
        b"0." + b"0" * 500 + b"1",
        b"1e0000000000000000000001",
        b"7" * 4_300,
        str(2**70).encode(),
        nested(127),  # with the body itself: 128 levels
        b'"\\u00e9\\ud83d\\ude80 \\" \\\\ \\/"',
        '"Zürich 日本 🚀"'.encode(),
    ],
)
def test_the_edges_of_what_is_accepted_are_forwarded_byte_for_byte(value):
    raw = with_member(value)
    body = decode_chat_body(raw)
    assert bytes(body.fields["x_unknown"]) == value
    assert CHAT.upstream_body(body, model=None, stream=False) is raw
    assert value in CHAT.upstream_body(body, model="gpt-4", stream=True)


def test_a_rewrite_splices_one_member_and_copies_the_others_as_they_came():
    raw = (
        b'{ "model" : "gpt-4o" , "messages":[{"role":"user","content":"caf\\u00e9", "name":"x"}],'
        b'"temperature" : 1.0, "x":{"b": 1.0e+2, "a": [1, 2 ]}, "stream":true,'
        b'"stream_options": {"include_obfuscation": false} }'
    )
    out = CHAT.upstream_body(decode_chat_body(raw), model="ft:gpt-3.5-turbo:acme::1", stream=True)
    assert out == (
        b'{"model":"ft:gpt-3.5-turbo:acme::1","messages":[{"role":"user","content":"caf\\u00e9", "name":"x"}],'
        b'"temperature":1.0,"x":{"b": 1.0e+2, "a": [1, 2 ]},"stream":true,'
        b'"stream_options":{"include_obfuscation":false,"include_usage":true}}'
    )


def test_replaced_keeps_the_typed_view_and_updates_the_members():
    body = decode_chat_body(MINIMAL)
    inner = body.replaced({"messages": msgspec.Raw(b'[{"role":"system","content":"ctx"}]')})
    assert inner.view is body.view
    assert json.loads(inner.raw)["messages"] == [{"role": "system", "content": "ctx"}]
    assert bytes(inner.fields["messages"]) == b'[{"role":"system","content":"ctx"}]'


# --- every later reader reads what the decode accepted (the second decodes that failed) ---------------------

_AT_DEPTH = 700
"""Frames put on the stack before the later readers run: far deeper than any request's path."""


def read_again(body: ChatBody) -> None:
    """What the pipeline, the cache, the RAG route and the routes read of an accepted body, once more."""
    for name, value in body.fields.items():  # the cache key canonicalises every member
        fields_key(tenant="t", route="r", model=None, fields={name: value}, ignored=CHAT.ignored_fields)
    msgspec.json.decode(body.raw)
    msgspec.json.decode(body.fields["messages"], type=list[msgspec.Raw])  # RAG, semantic cache
    msgspec.json.decode(body.raw, type=ChatRequest)  # the typed view, skipping what it does not keep
    for stream in (False, True):
        rewritten = CHAT.upstream_body(body, model="other", stream=stream)
        assert decode_chat_body(rewritten).view.messages == body.view.messages
    body.replaced({"messages": msgspec.Raw(b'[{"role":"user"}]')})


def deep_stack(levels: int, then):
    return then() if levels == 0 else deep_stack(levels - 1, then)


def mutations(seed: int, count: int):
    """Bodies near valid ones: hostile values spliced in, bytes flipped, cut or doubled (a seeded fuzzer)."""
    rng = random.Random(seed)
    values = [*(value for value, _, _ in HOSTILE.values()), b"1e308", b"7" * 4_300, nested(127), b"null", b"{}"]
    base = json.dumps({**RICH, "stream": True, "stream_options": {"include_usage": False}}).encode()
    for _ in range(count):
        raw = bytearray(with_member(rng.choice(values), rng.choice(["x_unknown", "message", "tools"])))
        if rng.random() < 0.5:
            raw = bytearray(base)
        for _ in range(rng.randint(0, 3)):
            at = rng.randrange(len(raw))
            action = rng.randrange(4)
            if action == 0:
                raw[at] = rng.randrange(256)
            elif action == 1:
                raw[at:at] = rng.choice([b"[", b"{", b'"', b"\\", b"\xff", b"1e999", b",", b"]"])
            elif action == 2:
                del raw[at : at + rng.randint(1, 4)]
            else:
                raw[at:at] = raw[at : at + rng.randint(1, 40)]
        yield bytes(raw)


def test_whatever_is_accepted_every_later_reader_reads_too():
    accepted = rejected = 0
    for raw in mutations(seed=11, count=3_000):
        try:
            body = decode_chat_body(raw)
        except InvalidRequestError:  # the one error it raises: a 400 (anything else fails the test)
            rejected += 1
            continue
        accepted += 1
        deep_stack(_AT_DEPTH, lambda body=body: read_again(body))
    assert accepted > 300
    assert rejected > 300


def test_a_body_at_the_depth_limit_is_read_again_deep_in_the_stack():
    body = decode_chat_body(with_member(nested(127)))
    deep_stack(_AT_DEPTH, lambda: read_again(body))
