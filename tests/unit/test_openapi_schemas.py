"""Response bodies checked against OpenAI's own OpenAPI schemas (`tests/openapi.py`, `tests/schemas/`)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

from tests.openapi import SCHEMA_FILE, SchemaMismatchError, rewrite_nullable, schema, schema_names, validate

EXTRACT_PY = SCHEMA_FILE.with_name("extract.py")


def _load_extract() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openai_schema_extract", EXTRACT_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


extract = _load_extract()

# Shaped like real api.openai.com bodies (2025), including the fields OpenAI sends as null.
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_f9f4fb6dbf",
}

CHUNK: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "service_tier": "default",
    "system_fingerprint": "fp_f9f4fb6dbf",
    "choices": [{"index": 0, "delta": {"content": "Hello"}, "logprobs": None, "finish_reason": None}],
    "usage": None,
}

USAGE_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "service_tier": "default",
    "system_fingerprint": "fp_f9f4fb6dbf",
    "choices": [],
    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
}

ERROR_BODY: dict[str, Any] = {"error": {"message": "x", "type": "invalid_request_error", "param": None, "code": None}}

MODELS: dict[str, Any] = {
    "object": "list",
    "data": [{"id": "gpt-4", "object": "model", "created": 1, "owned_by": "openai"}],
}


def _without(body: dict[str, Any], *path: str | int) -> dict[str, Any]:
    """A deep copy of `body` with the key at `path` removed."""
    result = copy.deepcopy(body)
    parent: Any = result
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return result


def _with(body: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    """A deep copy of `body` with `value` set at `path`."""
    result = copy.deepcopy(body)
    parent: Any = result
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return result


# --- bodies that must validate -------------------------------------------------------------------------


def test_chat_completion_validates() -> None:
    validate("CreateChatCompletionResponse", COMPLETION)


def test_tool_call_completion_validates() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
        ],
    }
    body = _with(COMPLETION, message, "choices", 0, "message")
    validate("CreateChatCompletionResponse", _with(body, "tool_calls", "choices", 0, "finish_reason"))


def test_stream_chunk_with_null_finish_reason_and_usage_validates() -> None:
    # The `nullable: true` pitfall: without the rewrite both nulls are rejected.
    validate("CreateChatCompletionStreamResponse", CHUNK)


def test_stream_first_and_last_chunks_validate() -> None:
    first = _with(CHUNK, {"role": "assistant", "content": "", "refusal": None}, "choices", 0, "delta")
    last = _with(_with(CHUNK, {}, "choices", 0, "delta"), "stop", "choices", 0, "finish_reason")
    for chunk in (first, last, _without(CHUNK, "usage")):
        validate("CreateChatCompletionStreamResponse", chunk)


def test_stream_usage_chunk_validates() -> None:
    validate("CreateChatCompletionStreamResponse", USAGE_CHUNK)


def test_stream_tool_call_chunk_validates() -> None:
    delta = {
        "tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": "f", "arguments": ""}}]
    }
    validate("CreateChatCompletionStreamResponse", _with(CHUNK, delta, "choices", 0, "delta"))


def test_many_stream_chunks_validate_quickly() -> None:
    chunks = [_with(CHUNK, {"content": f"token {i}"}, "choices", 0, "delta") for i in range(500)]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)


def test_vendor_extras_pass() -> None:
    # Objects are open (no additionalProperties: false), so OpenAI-compatible extras are tolerated.
    body = _with(COMPLETION, "thinking...", "choices", 0, "message", "reasoning_content")
    validate("CreateChatCompletionResponse", body)


def test_error_body_validates() -> None:
    validate("ErrorResponse", ERROR_BODY)
    validate("Error", ERROR_BODY["error"])


def test_models_list_validates() -> None:
    validate("ListModelsResponse", MODELS)
    validate("Model", MODELS["data"][0])


def test_chat_request_validates() -> None:
    request = {
        "model": "gpt-4",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "stop": None,
        "max_tokens": None,
    }
    validate("CreateChatCompletionRequest", request)


# --- bodies that must be rejected ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_name", "body", "expected"),
    [
        pytest.param(
            "ErrorResponse",
            _without(ERROR_BODY, "error", "param"),
            "'param' is a required property",
            id="error-no-param",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            _with(CHUNK, "bogus", "choices", 0, "finish_reason"),
            "$.choices[0].finish_reason: 'bogus' is not one of",
            id="chunk-bogus-finish-reason",
        ),
        pytest.param(
            "CreateChatCompletionResponse",
            _without(COMPLETION, "choices"),
            "'choices' is a required property",
            id="completion-no-choices",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            _with(CHUNK, "chat.completion", "object"),
            "$.object: 'chat.completion' is not one of ['chat.completion.chunk']",
            id="chunk-wrong-object",
        ),
        pytest.param(
            "CreateChatCompletionResponse",
            _without(COMPLETION, "choices", 0, "message", "refusal"),
            "$.choices[0].message: 'refusal' is a required property",
            id="message-no-refusal",
        ),
        pytest.param(
            "CreateChatCompletionResponse",
            _without(COMPLETION, "choices", 0, "logprobs"),
            "$.choices[0]: 'logprobs' is a required property",
            id="choice-no-logprobs",
        ),
        pytest.param(
            "CreateChatCompletionResponse",
            _with(COMPLETION, None, "choices", 0, "finish_reason"),
            "$.choices[0].finish_reason: None is not of type 'string'",
            id="completion-null-finish-reason",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            _without(CHUNK, "choices", 0, "finish_reason"),
            "$.choices[0]: 'finish_reason' is a required property",
            id="chunk-no-finish-reason",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            _with(CHUNK, None, "system_fingerprint"),
            "$.system_fingerprint: None is not of type 'string'",
            id="chunk-null-system-fingerprint",
        ),
        pytest.param(
            "CreateChatCompletionStreamResponse",
            _with(USAGE_CHUNK, {"prompt_tokens": 1}, "usage"),
            "$.usage: 'completion_tokens' is a required property",
            id="usage-incomplete",
        ),
        pytest.param(
            "ListModelsResponse",
            _without(MODELS, "data", 0, "owned_by"),
            "$.data[0]: 'owned_by' is a required property",
            id="model-no-owned-by",
        ),
    ],
)
def test_invalid_bodies_are_rejected(schema_name: str, body: dict[str, Any], expected: str) -> None:
    with pytest.raises(SchemaMismatchError) as excinfo:
        validate(schema_name, body)
    assert expected in str(excinfo.value)
    assert excinfo.value.schema_name == schema_name
    assert excinfo.value.errors


def test_unknown_schema_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="CreateChatCompletionResponse"):
        validate("ChatCompletion", {})


# --- what the simulated upstream must emit -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path", "required"),
    [
        ("CreateChatCompletionResponse", (), ["choices", "created", "id", "model", "object"]),
        (
            "CreateChatCompletionResponse",
            ("properties", "choices", "items"),
            ["finish_reason", "index", "logprobs", "message"],
        ),
        ("ChatCompletionResponseMessage", (), ["content", "refusal", "role"]),
        ("CreateChatCompletionStreamResponse", (), ["choices", "created", "id", "model", "object"]),
        ("CreateChatCompletionStreamResponse", ("properties", "choices", "items"), ["delta", "finish_reason", "index"]),
        ("ChatCompletionStreamResponseDelta", (), []),
        ("CompletionUsage", (), ["completion_tokens", "prompt_tokens", "total_tokens"]),
        ("Error", (), ["code", "message", "param", "type"]),
        ("Model", (), ["created", "id", "object", "owned_by"]),
    ],
)
def test_required_fields(name: str, path: tuple[str, ...], required: list[str]) -> None:
    node = schema(name)
    for step in path:
        node = node[step]
    assert sorted(node.get("required", [])) == required


# --- the nullable rewrite ------------------------------------------------------------------------------


def _accepts(raw_schema: dict[str, Any], instance: object) -> bool:
    return bool(Draft202012Validator(rewrite_nullable(raw_schema)).is_valid(instance))


def test_nullable_enum_accepts_null_and_keeps_the_enum() -> None:
    raw = {"type": "string", "enum": ["stop", "length"], "nullable": True}
    assert _accepts(raw, None)
    assert _accepts(raw, "stop")
    assert not _accepts(raw, "bogus")
    assert not _accepts(raw, 1)


@pytest.mark.parametrize(
    ("raw", "null_instance", "bad_instance"),
    [
        pytest.param({"type": "integer", "nullable": True}, None, "1", id="type"),
        pytest.param({"allOf": [{"type": "integer"}, {"minimum": 0}], "nullable": True}, None, -1, id="allOf"),
        pytest.param({"anyOf": [{"type": "integer"}, {"type": "boolean"}], "nullable": True}, None, "1", id="anyOf"),
        pytest.param({"oneOf": [{"type": "integer"}, {"type": "boolean"}], "nullable": True}, None, "1", id="oneOf"),
        pytest.param(
            {"properties": {"x": {"type": "integer", "nullable": True}}}, {"x": None}, {"x": "1"}, id="nested"
        ),
    ],
)
def test_nullable_accepts_null(raw: dict[str, Any], null_instance: object, bad_instance: object) -> None:
    assert not Draft202012Validator(raw).is_valid(null_instance)  # what a plain 2020-12 validator does
    assert _accepts(raw, null_instance)
    assert not _accepts(raw, bad_instance)


def test_nullable_ref_is_wrapped() -> None:
    raw = {"$ref": "#/components/schemas/CompletionUsage", "nullable": True, "description": "d"}
    expected = {"anyOf": [{"$ref": "#/components/schemas/CompletionUsage", "description": "d"}, {"type": "null"}]}
    assert rewrite_nullable(raw) == expected


def test_rewrite_leaves_data_and_property_names_alone() -> None:
    raw = {
        "type": "object",
        "properties": {"nullable": {"type": "boolean", "nullable": False}},
        "default": {"nullable": True},
        "enum": [{"nullable": True}],
        "x-meta": {"nullable": True},
    }
    before = copy.deepcopy(raw)
    rewritten = rewrite_nullable(raw)
    assert raw == before
    assert rewritten["properties"] == {"nullable": {"type": "boolean"}}
    assert rewritten["default"] == rewritten["enum"][0] == rewritten["x-meta"] == {"nullable": True}


def _nullable_keywords(node: Any) -> int:
    if isinstance(node, dict):
        own = int("nullable" in node and not isinstance(node["nullable"], dict))
        return own + sum(_nullable_keywords(value) for value in node.values())
    if isinstance(node, list):
        return sum(_nullable_keywords(item) for item in node)
    return 0


def test_loaded_subset_has_no_nullable_left_and_is_valid_2020_12() -> None:
    stored = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["components"]["schemas"]
    assert _nullable_keywords(stored) > 0  # the file stays a faithful, unrewritten copy
    for name in schema_names():
        assert _nullable_keywords(schema(name)) == 0, name
        Draft202012Validator.check_schema(schema(name))


# --- the stored subset -----------------------------------------------------------------------------------


def test_subset_holds_the_roots_and_every_ref_target() -> None:
    stored = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    schemas = stored["components"]["schemas"]
    assert set(extract.ROOTS) <= set(schemas)
    assert extract.reachable(schemas) == sorted(schemas)
    assert stored["source"]["repository"] == "https://github.com/openai/openai-openapi"


@pytest.mark.skipif(not extract.DEFAULT_SPEC.is_file(), reason=f"{extract.DEFAULT_SPEC} not present (fresh clone)")
def test_stored_subset_matches_fresh_extraction() -> None:
    fresh = extract.build_subset(extract.DEFAULT_SPEC)
    stored_text = SCHEMA_FILE.read_text(encoding="utf-8")
    assert json.loads(stored_text) == fresh, "re-run: python tests/schemas/extract.py"
    assert stored_text == extract.render(fresh), "re-run: python tests/schemas/extract.py"


def test_extract_rejects_refs_outside_components_schemas() -> None:
    schemas = {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/responses/C"}}
    with pytest.raises(ValueError, match="unsupported"):
        extract.reachable(schemas, ["A"])
    with pytest.raises(ValueError, match="'Missing'"):
        extract.reachable({}, ["Missing"])


def test_extract_script_path_is_relative_to_repo_root() -> None:
    assert Path(extract.DEFAULT_SPEC).parts[-3:] == ("shared", "openai-openapi", "openapi.json")
    assert Path(extract.REPO_ROOT) / "tests" / "schemas" / "openai.json" == SCHEMA_FILE
