"""`proxy.wire.jsonbody`: the two measures of nesting agree, large bodies are measured in C, the collector resumes."""

from __future__ import annotations

import gc
import json
import random
from typing import Any

import msgspec
import pytest

from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import _WALKED, MAX_DEPTH, _brackets_deeper, _walk_deeper, decode_json_object

TRICKY_STRINGS = ['[[{"', "\\", '\\"]', "\\\\", "]}]}", "\\u005c", '"', "é[🚀{", ""]


def random_value(rng: random.Random, depth: int) -> Any:
    """A JSON value nesting up to `depth` levels, its strings full of brackets, quotes and backslashes."""
    kind = rng.randrange(6) if depth > 0 else rng.randrange(3)
    if kind == 0:
        return rng.choice(TRICKY_STRINGS) * rng.randint(0, 3)
    if kind == 1:
        return rng.choice([0, -1.5, 1e300, True, None, 10**40])
    if kind == 2:
        return rng.choice(TRICKY_STRINGS)
    if kind in (3, 4):
        return [random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(TRICKY_STRINGS) + str(i): random_value(rng, depth - 1) for i in range(rng.randint(0, 3))}


def true_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(true_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(true_depth, value), default=0)
    return 0


def test_the_bracket_count_agrees_with_the_walk():
    rng = random.Random(11)
    for _ in range(2_000):
        value = {"x": random_value(rng, rng.randint(0, 12))}
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode()
        depth = true_depth(msgspec.json.decode(raw))
        for limit in (max(0, depth - 1), depth, depth + 1):
            assert _brackets_deeper(raw, limit) == (depth > limit), raw
            walked = _walk_deeper(msgspec.json.decode(raw), limit)
            assert walked is None or walked == (depth > limit), raw


def wide(levels: int, copies: int) -> bytes:
    return b'{"x":[' + b",".join([b"[" * (levels - 2) + b"]" * (levels - 2)] * copies) + b"]}"


def test_a_large_body_is_measured_on_its_brackets():
    accepted = decode_json_object(wide(MAX_DEPTH, _WALKED))  # 128 levels: accepted
    assert _walk_deeper(accepted, MAX_DEPTH) is None  # too many values to walk: it was measured on its brackets
    del accepted  # two million lists: freed here, not by the collector in a later test
    with pytest.raises(InvalidRequestError) as caught:
        decode_json_object(wide(MAX_DEPTH + 1, _WALKED))
    assert (caught.value.param, caught.value.instance_code) == ("x", "nested_too_deeply")
    del caught  # its traceback holds the decoder's frame (and the body it read) in a cycle with this frame


def test_a_body_of_a_million_values_is_checked():
    raw = b'{"x":[' + b",".join([b'[],{},"[",1'] * 250_000) + b"]}"
    assert len(decode_json_object(raw)["x"]) == 1_000_000


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was(enabled):
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        decode_json_object(b'{"a": [1, 2]}')
        assert gc.isenabled() is enabled
        with pytest.raises(InvalidRequestError):
            decode_json_object(b'{"a": [1, 2}')
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
