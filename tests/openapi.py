"""Validate HTTP bodies against OpenAI's own OpenAPI schemas (the subset in `tests/schemas/openai.json`).

The subset is a faithful copy of openai/openai-openapi (see `tests/schemas/SOURCE.md`). It still uses the
OpenAPI 3.0 keyword `nullable: true`, which a JSON Schema 2020-12 validator ignores; `rewrite_nullable`
turns each one into `anyOf: [<schema>, {"type": "null"}]` at load time, so `"finish_reason": null` passes.

Usage::

    from tests.openapi import validate

    validate("CreateChatCompletionStreamResponse", chunk)  # raises SchemaMismatchError if it does not match
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# jsonschema ships no type information; the project's mypy config may or may not ignore it.
from jsonschema import Draft202012Validator, ValidationError  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped,unused-ignore]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SCHEMA_FILE",
    "SchemaMismatchError",
    "rewrite_nullable",
    "rewrite_older_keywords",
    "schema",
    "schema_names",
    "validate",
]

SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "openai.json"
"""The stored subset of OpenAI's OpenAPI document."""

_BASE_URI = "urn:openai-openapi:chat"
_REF_PREFIX = "#/components/schemas/"

# JSON Schema 2020-12 keywords whose value is a schema, a list of schemas, or a name -> schema map. Other
# keywords (enum, const, default, example, x-*) hold data and are never rewritten.
_SUBSCHEMA = frozenset(
    {
        "additionalItems",
        "additionalProperties",
        "contains",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAP = frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"})


class SchemaMismatchError(AssertionError):
    """An instance does not match an OpenAI schema; the message lists every error with its JSON path."""

    def __init__(self, schema_name: str, errors: list[Any]) -> None:
        self.schema_name = schema_name
        """The `components.schemas` name the instance was checked against."""
        self.errors = errors
        """The `jsonschema.ValidationError`s, in the validator's order."""
        lines = [f"{len(errors)} error(s) validating against {schema_name}:"]
        lines += [f"  - {_describe(error)}" for error in errors]
        super().__init__("\n".join(lines))


def _describe(error: Any) -> str:
    """One line for an error, descending into anyOf/oneOf branches to the most relevant cause."""
    best = best_match([error])
    # best_match stops at a tie, which every rewritten `nullable` produces: "not null" vs the real cause.
    while best.context:
        causes = [e for e in best.context if not (e.validator == "type" and e.validator_value == "null")]
        if not causes or len(causes) == len(best.context):
            break
        best = best_match(causes)
    return f"{best.json_path}: {best.message}"


def rewrite_nullable(schema: Any) -> Any:
    """Return a copy of an OpenAPI schema with `nullable` rewritten for JSON Schema 2020-12.

    `{..., "nullable": true}` becomes `{"anyOf": [{...}, {"type": "null"}]}`, whatever else the schema holds
    (`type`, `enum`, `$ref`, `allOf`, `anyOf`, `oneOf`), so an `enum` without null also accepts null.
    `"nullable": false` is dropped. Subschemas are rewritten recursively; data keywords are left as they are.

    Args:
        schema: A schema (a JSON object or boolean) as loaded from JSON.

    Returns:
        The rewritten schema; the input is not modified.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "nullable":
            continue
        if key in _SUBSCHEMA_MAP and isinstance(value, dict):
            out[key] = {name: rewrite_nullable(sub) for name, sub in value.items()}
        elif (key in _SUBSCHEMA_LIST or key == "items") and isinstance(value, list):
            out[key] = [rewrite_nullable(sub) for sub in value]
        elif key in _SUBSCHEMA:
            out[key] = rewrite_nullable(value)
        else:
            out[key] = value
    if schema.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def rewrite_older_keywords(schema: Any, name: str) -> Any:
    """Return a copy of schema `name` with the older keywords that JSON Schema 2020-12 changed rewritten.

    - 2019-09's self-reference (`CompoundFilter`, the Responses API's file-search filters, has
      `$recursiveAnchor: true` and `$recursiveRef: "#"`): a plain `$ref` to the schema's own name.
    - OpenAPI 3.0's boolean `exclusiveMinimum`/`exclusiveMaximum` beside `minimum`/`maximum` (the
      fine-tuning hyperparameters): the 2020-12 number form.
    """
    if isinstance(schema, list):
        return [rewrite_older_keywords(item, name) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$recursiveAnchor":
            continue
        if key == "$recursiveRef" and value == "#":
            out["$ref"] = _REF_PREFIX + name
        elif key in _EXCLUSIVE and isinstance(value, bool):
            bound = _EXCLUSIVE[key]
            if value and bound in schema:
                out[key] = schema[bound]
        elif key in _EXCLUSIVE.values() and schema.get(_BOUNDED_BY[key]) is True:
            continue
        else:
            out[key] = rewrite_older_keywords(value, name)
    return out


_EXCLUSIVE = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}
_BOUNDED_BY = {bound: key for key, bound in _EXCLUSIVE.items()}


@functools.cache
def _schemas() -> Mapping[str, Any]:
    """The stored subset's `components.schemas`, with `nullable` and older keywords rewritten (loaded once)."""
    document = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"].items()
    return {name: rewrite_nullable(rewrite_older_keywords(schema, name)) for name, schema in schemas}


@functools.cache
def _registry() -> Registry[Any]:
    """A registry holding the rewritten document, so `#/components/schemas/X` resolves inside it."""
    resource: Resource[Any] = Resource.from_contents(
        {"components": {"schemas": dict(_schemas())}}, default_specification=DRAFT202012
    )
    registry: Registry[Any] = Registry().with_resource(_BASE_URI, resource)
    return registry


@functools.cache
def _validator(schema_name: str) -> Any:
    """One Draft 2020-12 validator per schema name, built on first use."""
    if schema_name not in _schemas():
        raise KeyError(f"unknown schema {schema_name!r}; {SCHEMA_FILE.name} holds {', '.join(schema_names())}")
    return Draft202012Validator({"$ref": f"{_BASE_URI}{_REF_PREFIX}{schema_name}"}, registry=_registry())


def schema_names() -> list[str]:
    """Return the names of the schemas the stored subset holds, sorted."""
    return sorted(_schemas())


def schema(schema_name: str) -> Any:
    """Return one schema of the subset after the `nullable` rewrite (for inspection in tests).

    Args:
        schema_name: A `components.schemas` name, e.g. `"CreateChatCompletionResponse"`.

    Returns:
        The rewritten schema (shared; do not mutate it).
    """
    return _schemas()[schema_name]


def validate(schema_name: str, instance: object) -> None:
    """Check a decoded JSON body against one of OpenAI's schemas.

    Args:
        schema_name: A `components.schemas` name, e.g. `"CreateChatCompletionStreamResponse"`.
        instance: The decoded JSON value (dicts, lists, str, int, float, bool, None).

    Raises:
        SchemaMismatchError: The instance does not match; the message lists each error and where it is.
        KeyError: The subset holds no schema of that name.
    """
    errors: list[ValidationError] = list(_validator(schema_name).iter_errors(instance))
    if errors:
        raise SchemaMismatchError(schema_name, errors)
