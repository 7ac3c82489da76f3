"""`fields_key()` of a chat request: what it covers, what it ignores, and that every request field is classified."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.cache.keys import fields_key
from proxy.endpoints.chat import ANSWER_FIELDS, CHAT, IGNORED_FIELDS
from proxy.wire.schemas import ChatRequest
from tests.openapi import schema

BASE: dict[str, Any] = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}


def key(body: dict[str, Any] | None = None, *, raw: bytes | None = None, **parts: Any) -> str:
    """The key of a chat request `body` (or `raw` bytes) as the response cache makes it."""
    parts = {"tenant": "acme", "route": "gpt4", "model": "gpt-4-0613", **parts}
    decoded = CHAT.decode(raw if raw is not None else json.dumps(body if body is not None else BASE).encode())
    return fields_key(fields=decoded.fields, ignored=CHAT.ignored_fields, **parts)


def request_properties(name: str = "CreateChatCompletionRequest") -> set[str]:
    """Every property OpenAI's request schema `name` has (through its allOf)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            walk(schema(node["$ref"].rsplit("/", 1)[-1]))
        for part in node.get("allOf", []) + node.get("anyOf", []):
            walk(part)
        found.update(node.get("properties", {}))

    walk(schema(name))
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
    spaced = json.dumps(BASE, indent=2).encode()
    assert key(raw=spaced) == key(BASE)


@pytest.mark.parametrize(
    "parts",
    [{"tenant": "globex"}, {"tenant": None}, {"route": "support-ft"}, {"model": "gpt-4o"}, {"scope": "idx-2"}],
)
def test_tenant_route_model_and_cache_scope_change_the_key(parts: dict[str, Any]) -> None:
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
    ("change", "expected"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0}, True),
        ({"seed": 7}, True),
        ({"temperature": 0.7, "seed": 7}, True),
        ({}, False),
        ({"temperature": 1}, False),
        ({"seed": None}, False),
    ],
)
def test_deterministic_means_temperature_zero_or_a_seed(change: dict[str, Any], expected: bool) -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], **change}
    assert CHAT.deterministic(CHAT.decode(json.dumps(body).encode())) is expected
