"""The structured-outputs validator of the parity evaluators, checked against the `jsonschema` library."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from proxy.parity.schema import UnsupportedSchemaError, same_json, schema_errors

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Z]"},
        "age": {"type": ["integer", "null"], "minimum": 0, "exclusiveMaximum": 150},
        "tags": {"type": "array", "items": {"enum": ["a", "b", 3]}, "minItems": 1, "maxItems": 2},
        "score": {"type": "number", "multipleOf": 0.5},
        "kind": {"const": "person"},
        "extra": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["value"],
            "additionalProperties": False,
        }
    },
    "anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}],
}
SHAPES = {
    "oneOf": [
        {"type": "object", "properties": {"r": {"type": "number"}}, "required": ["r"]},
        {"type": "object", "properties": {"w": {"type": "number"}}, "required": ["w"]},
    ],
    "allOf": [{"type": "object"}, {"maxItems": 1}],
}
CASES: list[tuple[dict[str, Any], Any]] = [
    (PERSON, {"name": "Ann", "age": 3}),
    (PERSON, {"name": "Ann", "age": None, "tags": ["a", 3], "score": 1.5, "kind": "person", "extra": {"x": True}}),
    (PERSON, {"name": "ann", "age": 3}),
    (PERSON, {"name": "Ann"}),
    (PERSON, {"name": "Ann", "age": -1}),
    (PERSON, {"name": "Ann", "age": 150}),
    (PERSON, {"name": "Ann", "age": 2.0}),
    (PERSON, {"name": "Ann", "age": 2.5}),
    (PERSON, {"name": "Ann", "age": True}),
    (PERSON, {"name": "Ann", "age": 3, "tags": []}),
    (PERSON, {"name": "Ann", "age": 3, "tags": ["a", "b", "a"]}),
    (PERSON, {"name": "Ann", "age": 3, "tags": ["c"]}),
    (PERSON, {"name": "Ann", "age": 3, "tags": [3.0]}),
    (PERSON, {"name": "Ann", "age": 3, "score": 1.25}),
    (PERSON, {"name": "Ann", "age": 3, "kind": "robot"}),
    (PERSON, {"name": "Ann", "age": 3, "extra": {"x": 1}}),
    (PERSON, {"name": "Ann", "age": 3, "other": 1}),
    (PERSON, ["Ann", 3]),
    (PERSON, None),
    (TREE, {"value": 1, "children": [{"value": 2, "children": []}, {"value": 3}]}),
    (TREE, {"value": 1, "children": [{"value": "2"}]}),
    (TREE, {"value": 1, "children": [{"children": []}]}),
    (TREE, None),
    (TREE, 4),
    (SHAPES, {"r": 1}),
    (SHAPES, {"r": 1, "w": 2}),
    (SHAPES, {"q": 1}),
    ({"type": "string"}, "x"),
    ({"type": "number"}, 1),
    ({"type": "number"}, False),
    ({"type": "integer"}, 10**20),
    ({"type": "boolean"}, 0),
    ({"enum": [1, "1", None]}, 1.0),
    ({"enum": [1]}, True),
    ({"type": "string", "format": "date-time"}, "not a date"),  # format is an annotation, as jsonschema's default
    ({}, {"anything": [1]}),
    ({"type": "object", "properties": {"a": False}}, {"a": 1}),
]


@pytest.mark.parametrize(("schema", "value"), CASES)
def test_the_verdict_is_jsonschema_s(schema, value):
    expected = jsonschema.Draft202012Validator(schema).is_valid(value)
    errors = schema_errors(value, schema)
    assert (not errors) == expected, errors


def test_the_cases_cover_valid_and_invalid_values():
    verdicts = [jsonschema.Draft202012Validator(schema).is_valid(value) for schema, value in CASES]
    assert 8 <= sum(verdicts) <= len(CASES) - 8


def test_errors_say_where():
    assert schema_errors({"name": "ann", "age": 3}, PERSON) == ["$.name: 'ann' does not match '^[A-Z]'"]
    node = {"$defs": TREE["$defs"], "$ref": "#/$defs/node"}
    assert schema_errors({"value": 1, "children": [{"value": "2"}]}, node) == [
        "$.children[0].value: string is not of type integer"
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 1},
        {"not": {"type": "string"}},
        {"type": "object", "patternProperties": {"a": {}}},
        {"$ref": "#/$defs/missing"},
        {"$ref": "https://example.com/schema"},
        {"type": "date"},
        {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}},
    ],
)
def test_schemas_outside_the_subset_are_refused_not_half_checked(schema):
    with pytest.raises(UnsupportedSchemaError):
        schema_errors({"a": ["x"]}, schema)


def test_json_equality():
    assert same_json({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not same_json(True, 1)
    assert not same_json([1], [1, 1])
    assert not same_json({"a": 1}, {"b": 1})
    assert same_json(None, None)
