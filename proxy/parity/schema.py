"""`schema_errors`: where a JSON value breaks a JSON schema, for the subset OpenAI's structured outputs accept.

The subset (OpenAI, "Structured Outputs", supported schemas): `type` (one or a list, `null` included), `enum`,
`const`, `anyOf` (and `allOf`, `oneOf`, which the simulator also generates), `$ref` into `$defs` or
`definitions` and `#` itself (recursive schemas), `properties`, `required`, `additionalProperties` (a bool or
a schema), `items`, `minItems`, `maxItems`, `pattern` (searched, as JSON Schema's ECMA regexes are),
`multipleOf`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`. `format` is read as an annotation
(as the `jsonschema` library does by default). A validation keyword outside the subset raises
`UnsupportedSchemaError`, so that no answer passes a rule it was not checked against; `tests/unit/
test_parity_schema.py` checks the verdicts against the `jsonschema` library's on the same cases. Written here
rather than depending on `jsonschema` at run time: the subset is this small, and `jsonschema` would bring
`referencing`, `rpds-py` and `attrs` into the image for it.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["UnsupportedSchemaError", "same_json", "schema_errors"]

UNSUPPORTED = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "prefixItems",
        "minLength",
        "maxLength",
    }
)
"""Validation keywords outside the subset: a schema with one of them is refused, not half-checked."""
_MAX_DEPTH = 64
_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


class UnsupportedSchemaError(ValueError):
    """The schema uses a keyword outside the structured-outputs subset, or a `$ref` that does not resolve."""


def schema_errors(value: object, schema: Mapping[str, Any]) -> list[str]:
    """Every place `value` breaks `schema`, as `path: what` (empty: valid).

    Raises:
        UnsupportedSchemaError: the schema is outside the subset.
    """
    errors: list[str] = []
    _check(value, schema, schema, "$", errors, 0)
    return errors


def _resolve(reference: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if reference == "#":
        return root
    match = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", reference)
    target = (root.get(match[1]) or {}).get(match[2].replace("~1", "/").replace("~0", "~")) if match else None
    if not isinstance(target, Mapping):
        raise UnsupportedSchemaError(f"$ref {reference!r} does not resolve to a definition of the schema")
    return target


def _check(value: object, schema: object, root: Mapping[str, Any], path: str, errors: list[str], depth: int) -> None:
    if schema is True or schema == {}:
        return
    if schema is False:
        errors.append(f"{path}: no value is allowed here")
        return
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        raise UnsupportedSchemaError(f"{path}: the schema is not an object, or nests deeper than {_MAX_DEPTH}")
    unsupported = UNSUPPORTED.intersection(schema)
    if unsupported:
        raise UnsupportedSchemaError(f"{path}: {sorted(unsupported)[0]} is outside the structured-outputs subset")
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], root), root, path, errors, depth + 1)
    _check_type_and_values(value, schema, path, errors)
    _check_combinations(value, schema, root, path, errors, depth)
    if isinstance(value, dict):
        _check_object(value, schema, root, path, errors, depth)
    elif isinstance(value, list):
        _check_array(value, schema, root, path, errors, depth)
    elif isinstance(value, str) and "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{path}: {value!r} does not match {schema['pattern']!r}")
    elif _TYPES["number"](value):
        _check_number(value, schema, path, errors)


def _check_type_and_values(value: object, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if any(name not in _TYPES for name in names):
            raise UnsupportedSchemaError(f"{path}: unknown type in {names}")
        if not any(_TYPES[name](value) for name in names):
            errors.append(f"{path}: {_kind(value)} is not of type {' or '.join(names)}")
    if "enum" in schema and not any(same_json(value, option) for option in schema["enum"]):
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and not same_json(value, schema["const"]):
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")


def _check_combinations(
    value: object, schema: Mapping[str, Any], root: Mapping[str, Any], path: str, errors: list[str], depth: int
) -> None:
    for keyword in ("anyOf", "oneOf", "allOf"):
        if keyword not in schema:
            continue
        valid = sum(not _errors_under(value, option, root, path, depth) for option in schema[keyword])
        count = len(schema[keyword])
        wanted = {"anyOf": valid >= 1, "oneOf": valid == 1, "allOf": valid == count}[keyword]
        if not wanted:
            errors.append(f"{path}: {valid} of the {count} schemas of {keyword} match")


def _errors_under(value: object, schema: object, root: Mapping[str, Any], path: str, depth: int) -> list[str]:
    found: list[str] = []
    _check(value, schema, root, path, found, depth + 1)
    return found


def _check_object(
    value: dict[Any, Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str, errors: list[str], depth: int
) -> None:
    properties = schema.get("properties", {})
    errors.extend(f"{path}: {name!r} is required" for name in schema.get("required", ()) if name not in value)
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            _check(item, properties[name], root, f"{path}.{name}", errors, depth + 1)
        elif extra is False:
            errors.append(f"{path}: {name!r} is not an allowed property")
        else:
            _check(item, extra, root, f"{path}.{name}", errors, depth + 1)


def _check_array(
    value: list[Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str, errors: list[str], depth: int
) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: {len(value)} items, fewer than {schema['minItems']}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: {len(value)} items, more than {schema['maxItems']}")
    if "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], root, f"{path}[{index}]", errors, depth + 1)


def _check_number(value: Any, schema: Mapping[str, Any], path: str, errors: list[str]) -> None:
    bounds: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
        ("minimum", operator.ge),
        ("maximum", operator.le),
        ("exclusiveMinimum", operator.gt),
        ("exclusiveMaximum", operator.lt),
    )
    for keyword, holds in bounds:
        if keyword in schema and not holds(value, schema[keyword]):
            errors.append(f"{path}: {value!r} breaks {keyword} {schema[keyword]!r}")
    step = schema.get("multipleOf")
    if step is not None:
        quotient = value / step
        if not math.isfinite(quotient) or int(quotient) != quotient:
            errors.append(f"{path}: {value!r} is not a multiple of {step!r}")


def same_json(left: object, right: object) -> bool:
    """JSON equality: 1 equals 1.0, but True is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right, strict=True))
    return left == right


def _kind(value: object) -> str:
    return next(
        (name for name in ("null", "boolean", "integer", "number", "string", "array", "object") if _TYPES[name](value)),
        "value",
    )
