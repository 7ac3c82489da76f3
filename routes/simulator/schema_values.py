"""A value valid against a JSON schema: structured output and tool-call arguments for the simulated upstream.

`value_for(schema)` answers what a model in strict mode would: every required property, the optional ones
too (as a model usually fills them), strings of the right `format` or matching their `pattern`
(`pattern_text`), numbers within their bounds, arrays with at least `minItems`, the first non-null
branch of an `anyOf`/`oneOf`, `$ref`s into `$defs` (or `definitions`) followed. What Pydantic, the SDK's
`to_strict_json_schema` and LangChain emit is the target: a value the SDK's `parse` (and Pydantic's
validation) accepts.

A client chooses the schema, so the walk is bounded: at most `MAX_DEPTH` levels (deeper, optional
properties are dropped and a nullable branch preferred, which is how a recursive model ends), arrays of
at most `MAX_ITEMS` generated items, and `MAX_NODES` values in all. A schema that asks for more, or that
contradicts itself, gets a best effort, never an exception or an unbounded answer. The walk is
deterministic: the same schema, the same value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from routes.simulator.pattern_text import text_matching

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_NODES", "schema_in", "value_for"]

MAX_DEPTH = 12
MAX_ITEMS = 16
MAX_NODES = 2_000
_FORMATS = {
    "date-time": "2024-05-13T12:00:00Z",
    "date": "2024-05-13",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
}
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


_SCAN_CHARS = 65_536
_SCAN_OBJECTS = 256


def schema_in(messages: object) -> dict[str, Any] | None:
    """The last JSON schema written in the messages' text (a prompt's format instructions), or None.

    `json_object` mode leaves the shape to the prompt: LangChain's `json_mode` and its output parsers put
    the schema there (after an example schema, hence the last one). A schema is a JSON object with
    `properties` (or `"type": "object"`); at most the last `_SCAN_CHARS` of each message are read.
    """
    found = None
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        for part in parts:
            text = part if isinstance(part, str) else part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str):
                found = _last_schema(text[-_SCAN_CHARS:]) or found
    return found


def _is_schema(value: object) -> bool:
    return isinstance(value, dict) and (isinstance(value.get("properties"), dict) or value.get("type") == "object")


def _last_schema(text: str) -> dict[str, Any] | None:
    """The last schema in `text`, whole: the outermost of the objects that enclose the last schema-like one."""
    decoder = json.JSONDecoder()
    found: tuple[dict[str, Any], int, int] | None = None  # the schema, where it starts, where it ends
    at = len(text)
    for _ in range(_SCAN_OBJECTS):
        at = text.rfind("{", 0, at)
        if at < 0:
            break
        try:
            value, end = decoder.raw_decode(text, at)
        except ValueError:
            continue
        if _is_schema(value) and (found is None or end >= found[2]):  # the first found, or one around it
            found = (value, at, end)
    return found[0] if found else None


@dataclass(slots=True)
class _Walk:
    root: dict[str, Any]
    nodes: int = 0


def value_for(schema: object) -> Any:
    """A JSON value valid against `schema` (best effort, bounded, deterministic; never raises)."""
    root = schema if isinstance(schema, dict) else {}
    return _value(_Walk(root), schema, 0, 0)


def _value(walk: _Walk, schema: object, depth: int, variant: int) -> Any:
    walk.nodes += 1
    if depth > 3 * MAX_DEPTH:  # a cycle of required properties: no valid value is finite, so end it here
        return None
    if not isinstance(schema, dict) or walk.nodes > MAX_NODES:
        return None if schema is False else "simulated"
    schema = _resolved(walk, schema)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[variant % len(enum)]
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        return _value(walk, _branch(walk, schema, branches, depth), depth + 1, variant)
    if isinstance(schema.get("allOf"), list):
        return _value(walk, _merged(walk, schema), depth + 1, variant)
    kind = _kind(schema, depth)
    if kind == "object":
        return _object(walk, schema, depth)
    if kind == "array":
        return _array(walk, schema, depth)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer", variant)
    if kind == "boolean":
        return variant % 2 == 0
    if kind == "null":
        return None
    return _string(schema, variant)


def _resolved(walk: _Walk, schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$ref`s (local JSON pointers, a chain of at most `MAX_DEPTH`) followed."""
    for _ in range(MAX_DEPTH):
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = walk.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return {}
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        schema = {**target, **siblings}
    return {}


def _is_null(schema: object) -> bool:
    return isinstance(schema, dict) and (schema.get("type") == "null" or schema.get("const", 0) is None)


def _branch(walk: _Walk, schema: dict[str, Any], branches: list[Any], depth: int) -> Any:
    """The branch to follow: the first non-null one, or a null one when deep (so a recursion ends)."""
    deep = depth >= MAX_DEPTH // 2
    for branch in branches:
        resolved = _resolved(walk, branch) if isinstance(branch, dict) else branch
        if _is_null(resolved) == deep:
            return _with_siblings(schema, resolved, ("anyOf", "oneOf"))
    return _with_siblings(schema, branches[0], ("anyOf", "oneOf"))


def _with_siblings(schema: dict[str, Any], branch: object, drop: tuple[str, ...]) -> object:
    """`branch` with what `schema` says beside its branches (`properties` next to `anyOf`, say)."""
    if not isinstance(branch, dict):
        return branch
    siblings = {key: value for key, value in schema.items() if key not in drop and key not in ("$defs", "definitions")}
    return {**siblings, **branch} if siblings else branch


def _merged(walk: _Walk, schema: dict[str, Any]) -> dict[str, Any]:
    """An `allOf`'s schemas as one: properties and required lists joined, other keywords the last one's."""
    merged: dict[str, Any] = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        part = _resolved(walk, part) if isinstance(part, dict) else {}
        properties = {**(merged.get("properties") or {}), **(part.get("properties") or {})}
        required = [*(merged.get("required") or []), *(part.get("required") or [])]
        merged.update(part)
        merged["properties"], merged["required"] = properties, required
    return merged


def _kind(schema: dict[str, Any], depth: int) -> str:
    """The JSON type to produce: the schema's (the first non-null of a list), else one its keywords imply."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k in _TYPES]
        deep = depth >= MAX_DEPTH and "null" in kinds
        kind = "null" if deep else next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if kind in _TYPES:
        return str(kind)
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema or "minItems" in schema:
        return "array"
    if any(key in schema for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return "string"


def _object(walk: _Walk, schema: dict[str, Any], depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    required = [name for name in required if isinstance(name, str)] if isinstance(required, list) else []
    names = list(properties) if depth < MAX_DEPTH // 2 else [name for name in properties if name in required]
    names += [name for name in required if name not in names]
    value = {name: _value(walk, properties.get(name, {}), depth + 1, 0) for name in names}
    extra = schema.get("additionalProperties")
    wanted = schema.get("minProperties")
    if isinstance(extra, dict) and not properties:
        wanted = max(1, wanted) if isinstance(wanted, int) else 1
    if isinstance(wanted, int) and extra is not False:
        extra_schema = extra if isinstance(extra, dict) else {}
        for index in range(min(wanted, MAX_ITEMS) - len(value)):
            value[f"key{index + 1}"] = _value(walk, extra_schema, depth + 1, index)
    return value


def _array(walk: _Walk, schema: dict[str, Any], depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = schema.get("items")
    low = _int(schema.get("minItems"), 0)
    high = _int(schema.get("maxItems"), MAX_ITEMS)
    count = min(max(low, len(prefix), 0 if depth >= MAX_DEPTH // 2 else 1), high, MAX_ITEMS)
    if items is False:
        count = min(count, len(prefix))
    unique = schema.get("uniqueItems") is True
    schemas = [prefix[i] if i < len(prefix) else (items if isinstance(items, dict) else {}) for i in range(count)]
    return [_value(walk, item, depth + 1, i if unique else 0) for i, item in enumerate(schemas)]


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _bound(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _number(schema: dict[str, Any], integer: bool, variant: int) -> int | float:
    """A number within the schema's bounds (inclusive and exclusive) and a multiple of its `multipleOf`."""
    low, high = _bound(schema.get("minimum")), _bound(schema.get("maximum"))
    above, below = _bound(schema.get("exclusiveMinimum")), _bound(schema.get("exclusiveMaximum"))
    if integer:  # exclusive bounds become inclusive ones on the integers
        low = _tightest(max, low and math.ceil(low), None if above is None else math.floor(above) + 1)
        high = _tightest(min, high and math.floor(high), None if below is None else math.ceil(below) - 1)
        above = below = None
    floor_ = _tightest(max, low, above)
    ceiling = _tightest(min, high, below)
    value: float = 1.0 + variant if integer else 1.5 + variant
    if floor_ is not None and (value < floor_ or (floor_ == above and value <= floor_)):
        value = floor_ if floor_ != above else (floor_ + ceiling) / 2 if ceiling is not None else floor_ + 1
    if ceiling is not None and (value > ceiling or (ceiling == below and value >= ceiling)):
        value = ceiling if ceiling != below else (floor_ + ceiling) / 2 if floor_ is not None else ceiling - 1
    step = _bound(schema.get("multipleOf"))
    if step and step > 0:
        multiple = math.ceil(value / step) * step
        value = multiple if ceiling is None or multiple <= ceiling else math.floor(value / step) * step
    return int(value) if integer else value


def _tightest(pick: Any, *bounds: float | None) -> float | None:
    """The tightest of the bounds that are set (`pick` is `max` for lower bounds, `min` for upper ones)."""
    present = [bound for bound in bounds if bound is not None]
    return float(pick(present)) if present else None


def _string(schema: dict[str, Any], variant: int) -> str:
    """A string the schema's `pattern` matches, or of its `format` (a placeholder word otherwise), within its bounds."""
    pattern = schema.get("pattern")
    matching = text_matching(pattern) if isinstance(pattern, str) else None
    if matching is not None:
        return matching
    text = _FORMATS.get(str(schema.get("format")), "simulated")
    if variant:
        text = f"{text}-{variant}" if text == "simulated" else text
    low = min(_int(schema.get("minLength"), 0), 4096)
    high = _int(schema.get("maxLength"), len(text) + low)
    if len(text) < low:
        text += "x" * (low - len(text))
    return text[: max(high, 0)]
