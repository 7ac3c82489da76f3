"""`proxy.wire.parameters`: OpenAI's bounds on chat parameters, with OpenAI's messages and codes (issue 11, point 8)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.endpoints.chat import CHAT
from proxy.wire.errors import InvalidRequestError
from proxy.wire.schemas import ChatBody, decode_chat_body

BASE = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}


def decode(**fields: Any) -> ChatBody:
    return decode_chat_body(json.dumps({**BASE, **fields}).encode())


def rejection(**fields: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        decode(**fields)
    error = caught.value
    assert error.status == 400
    assert json.loads(error.body())["error"]["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(
    ("fields", "param", "code", "message"),
    [
        (
            {"n": 2**70},
            "n",
            "integer_above_max_value",
            "Invalid 'n': integer above maximum value. Expected a value <= 128, "
            "but got 1180591620717411303424 instead.",
        ),
        (
            {"n": 0},
            "n",
            "integer_below_min_value",
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
        ),
        (
            {"n": 1.5},
            "n",
            "invalid_type",
            "Invalid type for 'n': expected an integer, but got a decimal number instead.",
        ),
        ({"n": "2"}, "n", "invalid_type", "Invalid type for 'n': expected an integer, but got a string instead."),
        ({"n": True}, "n", "invalid_type", "Invalid type for 'n': expected an integer, but got a boolean instead."),
        ({"n": [1]}, "n", "invalid_type", "Invalid type for 'n': expected an integer, but got an array instead."),
        (
            {"temperature": 2.1},
            "temperature",
            "decimal_above_max_value",
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.1 instead.",
        ),
        (
            {"temperature": -2.5},
            "temperature",
            "decimal_below_min_value",
            "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -2.5 instead.",
        ),
        (
            {"temperature": "hot"},
            "temperature",
            "invalid_type",
            "Invalid type for 'temperature': expected a decimal, but got a string instead.",
        ),
        ({"top_p": 1.01}, "top_p", "decimal_above_max_value", None),
        ({"top_p": -0.1}, "top_p", "decimal_below_min_value", None),
        ({"frequency_penalty": 2.5}, "frequency_penalty", "decimal_above_max_value", None),
        ({"presence_penalty": -3}, "presence_penalty", "decimal_below_min_value", None),
        ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value", None),
        ({"top_logprobs": -1}, "top_logprobs", "integer_below_min_value", None),
        ({"seed": 2**63}, "seed", "integer_above_max_value", None),
        ({"seed": -(2**63) - 1}, "seed", "integer_below_min_value", None),
        (
            {"seed": 1.5},
            "seed",
            "invalid_type",
            "Invalid type for 'seed': expected an integer, but got a decimal number instead.",
        ),
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value", None),
        ({"max_tokens": 2**64}, "max_tokens", "integer_above_max_value", None),
        ({"max_completion_tokens": -1}, "max_completion_tokens", "integer_below_min_value", None),
        ({"logit_bias": {"50256": 101}}, "logit_bias.50256", "integer_above_max_value", None),
        ({"logit_bias": {"50256": -100.5}}, "logit_bias.50256", "invalid_type", None),
        (
            {"stop": ["a", "b", "c", "d", "e"]},
            "stop",
            "array_above_max_length",
            "Invalid 'stop': array too long. Expected an array with maximum length 4, "
            "but got an array with length 5 instead.",
        ),
        ({"stop": []}, "stop", "empty_array", None),
        ({"functions": [{"name": f"f{i}"} for i in range(129)]}, "functions", "array_above_max_length", None),
        (
            {"messages": []},
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ),
        (
            {"metadata": {f"k{i}": "v" for i in range(17)}},
            "metadata",
            "object_above_max_properties",
            "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            "but got an object with 17 properties instead.",
        ),
        (
            {"metadata": {"k": "x" * 600}},
            "metadata.k",
            "string_above_max_length",
            "Invalid 'metadata.k': string too long. Expected a string with maximum length 512, "
            "but got a string with length 600 instead.",
        ),
        ({"metadata": {"k" * 70: "v"}}, "metadata", "property_name_above_max_length", None),
        ({"safety_identifier": "s" * 65}, "safety_identifier", "string_above_max_length", None),
    ],
)
def test_out_of_range_is_openais_400(fields, param, code, message):
    error = rejection(**fields)
    assert (error.param, error.instance_code) == (param, code)
    if message is not None:
        assert error.message == message


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 1},
        {"n": 128},
        {"n": 1.0},  # JSON Schema's integer: a number without a fraction, as OpenAI reads it
        {"n": 1e2},
        {"n": None},
        {"temperature": 0},
        {"temperature": 2},
        {"temperature": 2.0},
        {"top_p": 1},
        {"top_p": 0.0},
        {"frequency_penalty": -2},
        {"presence_penalty": 2.0},
        {"top_logprobs": 0},
        {"top_logprobs": 20.0},
        {"seed": -(2**63)},
        {"seed": 2**63 - 1},
        {"seed": None},
        {"max_tokens": 1},
        {"max_completion_tokens": 2**63 - 1},
        {"logit_bias": {"50256": -100, "1": 100.0}},
        {"stop": "\n"},
        {"stop": ["a", "b", "c", "d"]},
        {"metadata": {f"k{i}": "v" * 512 for i in range(16)}},
        {"safety_identifier": "s" * 64},
        {"top_k": 10**30, "x_vendor": {"n": 10**9}},  # no bound OpenAI states: the upstream's to judge
    ],
)
def test_within_range_is_accepted_and_forwarded_as_sent(fields):
    raw = json.dumps({**BASE, **fields}).encode()
    body = decode_chat_body(raw)
    assert CHAT.upstream_body(body, model=None, stream=False) is raw
    assert json.loads(CHAT.upstream_body(body, model="other", stream=False)) == {**BASE, **fields, "model": "other"}


def test_an_integer_valued_float_reaches_the_typed_view_as_an_integer_and_the_upstream_as_sent():
    raw = b'{"model":"m","messages":[{"role":"user"}],"n":2.0}'
    body = decode_chat_body(raw)
    assert body.view.n == 2
    assert type(body.view.n) is int
    assert b'"n":2.0' in CHAT.upstream_body(body, model="other", stream=False)


def test_the_first_bounded_parameter_in_the_body_is_named():
    assert rejection(temperature=9, n=0).param == "temperature"
    assert rejection(n=0, temperature=9).param == "n"


def test_a_long_value_is_shortened_in_the_message():
    error = rejection(n=10**300)
    assert len(error.message) < 200
    assert "..." in error.message
