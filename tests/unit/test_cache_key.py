"""`fields_key()`: what it covers, what it ignores, and that every request field has been classified."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from proxy.cache.keys import ANSWER_FIELDS, IGNORED_FIELDS, fields_key, is_deterministic
from proxy.wire.schemas import ChatRequest
from tests.openapi import schema

BASE: dict[str, Any] = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
"""A body's top-level fields as raw JSON, as `proxy.wire.schemas.decode_chat_body` keeps them."""


def raw_key(raw: bytes, **parts: Any) -> str:
    parts = {"tenant": "acme", "route": "gpt4", "model": "gpt-4-0613", **parts}
    return fields_key(fields=FIELDS.decode(raw), **parts)


def key(body: dict[str, Any] | None = None, **parts: Any) -> str:
    return raw_key(json.dumps(body if body is not None else BASE).encode(), **parts)


def request_properties() -> set[str]:
    """Every property OpenAI's CreateChatCompletionRequest has (through its allOf)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            walk(schema(node["$ref"].rsplit("/", 1)[-1]))
        for part in node.get("allOf", []) + node.get("anyOf", []):
            walk(part)
        found.update(node.get("properties", {}))

    walk(schema("CreateChatCompletionRequest"))
    return found


def test_every_field_of_openais_request_is_classified() -> None:
    """A field OpenAI adds to its request schema fails here until someone decides whether it changes answers."""
    unclassified = request_properties() - ANSWER_FIELDS - IGNORED_FIELDS
    assert not unclassified, f"classify these in proxy/cache/keys.py: {sorted(unclassified)}"


def test_every_field_of_the_typed_view_is_classified() -> None:
    unclassified = set(ChatRequest.__struct_fields__) - ANSWER_FIELDS - IGNORED_FIELDS
    assert not unclassified, f"classify these in proxy/cache/keys.py: {sorted(unclassified)}"


def test_no_field_is_in_both_sets() -> None:
    assert not ANSWER_FIELDS & IGNORED_FIELDS


def test_the_same_request_has_the_same_key_whatever_the_json_layout() -> None:
    reordered = {"temperature": 0, "messages": [{"content": "Hi", "role": "user"}], "model": "gpt-4"}
    assert key(reordered) == key(BASE)
    assert raw_key(json.dumps(BASE, indent=2).encode()) == key(BASE)


@pytest.mark.parametrize(
    "parts",
    [{"tenant": "globex"}, {"tenant": None}, {"route": "support-ft"}, {"model": "gpt-4o"}, {"index_version": "idx-2"}],
)
def test_tenant_route_model_and_index_version_change_the_key(parts: dict[str, Any]) -> None:
    assert key(**parts) != key()


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "Hi!"}]},
        {"messages": [{"role": "system", "content": "Hi"}]},
        {"temperature": 0.5},
        {"seed": 1},
        {"max_tokens": 5},
        {"stop": ["\n"]},
        {"n": 2},
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"logprobs": True},
        {"brand_new_field": 1},  # unknown to us: keyed, to be safe
    ],
)
def test_fields_that_change_the_answer_change_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key()


@pytest.mark.parametrize(
    "change",
    [
        {"stream": True},
        {"stream_options": {"include_usage": True}},
        {"user": "u-1"},
        {"metadata": {"team": "a"}},
        {"store": True},
        {"model": "some-alias"},  # the route's upstream model is keyed instead
    ],
)
def test_fields_that_do_not_change_the_answer_leave_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) == key()


def test_the_callers_model_is_keyed_when_the_route_keeps_it() -> None:
    assert key({**BASE, "model": "gpt-4o"}, model=None) != key({**BASE, "model": "gpt-4"}, model=None)


def test_parts_cannot_run_together() -> None:
    """Separators: moving characters from one part to the next never gives the same key."""
    assert key(tenant="ab", route="c") != key(tenant="a", route="bc")
    assert key({**BASE, "stop": "a"}) != key({**BASE, "stop": "", "a": ""})


def test_null_and_absent_differ_only_as_the_upstream_sees_them() -> None:
    # `"seed": null` is sent upstream as written; it is keyed as written.
    assert key({**BASE, "seed": None}) != key()


def test_keys_are_short_and_versioned() -> None:
    value = key()
    assert value.startswith("v1:")
    assert len(value) == 3 + 40


@pytest.mark.parametrize(
    ("temperature", "seed", "expected"),
    [
        (0, False, True),
        (0.0, False, True),
        (None, True, True),
        (0.7, True, True),
        (None, False, False),
        (1, False, False),
    ],
)
def test_deterministic_means_temperature_zero_or_a_seed(temperature, seed, expected) -> None:
    assert is_deterministic(temperature, seed) is expected
