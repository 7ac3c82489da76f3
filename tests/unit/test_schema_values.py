"""The simulator's schema walk: whatever schema a client sends, the value it makes validates (issue 13, point 7)."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from openai.lib._pydantic import to_strict_json_schema

from routes.simulator.schema_values import MAX_ITEMS, schema_in, value_for


def valid(schema: dict[str, Any]) -> Any:
    value = value_for(schema)
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)
    json.dumps(value)
    return value


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(pydantic.BaseModel):
    street: str
    city: str
    zip_code: str | None = None


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18, le=130)
    height: float = pydantic.Field(gt=0, lt=3)
    site: pydantic.AnyUrl | None = None
    born: datetime.date
    seen: datetime.datetime
    id: uuid.UUID
    colour: Colour
    kind: Literal["a", "b"]
    tags: list[str] = pydantic.Field(min_length=2)
    home: Address
    others: list[Address]
    extra: dict[str, int]
    partner: Person | None = None


@pytest.mark.parametrize("strict", [False, True])
def test_a_pydantic_model_validates_its_own_value(strict):
    schema = to_strict_json_schema(Person) if strict else Person.model_json_schema()
    person = Person.model_validate(valid(schema))
    assert len(person.tags) >= 2
    assert 18 <= person.age <= 130


def test_a_recursive_schema_ends():
    schema = {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#"}}}}}
    assert json.dumps(value_for(schema)).count("next") < 20
    endless = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    value_for(endless)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "minItems": 10**9, "items": {"type": "array", "minItems": 10**9}},
        {"type": "string", "minLength": 10**12},
        {"type": "integer", "minimum": 1e400},
        {"properties": [], "required": 5, "items": "x"},
        {"anyOf": []},
        {"$ref": "http://elsewhere/schema"},
        {"$ref": "#/nowhere/at/all"},
    ],
)
def test_a_hostile_schema_gets_a_bounded_answer(schema):
    assert len(json.dumps(value_for(schema))) < 1_000_000


def test_arrays_are_bounded_but_keep_min_items():
    assert len(valid({"type": "array", "minItems": 3, "uniqueItems": True, "items": {"type": "integer"}})) == 3
    assert len(value_for({"type": "array", "minItems": 1000})) == MAX_ITEMS


_LEAF = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(
        lambda kind, low, span, exclusive, step: {
            "type": kind,
            ("exclusiveMinimum" if exclusive else "minimum"): low,
            "maximum": low + span,
            **({"multipleOf": step} if step else {}),
        },
        st.sampled_from(["integer", "number"]),
        st.integers(-1000, 1000),
        st.integers(2, 1000),
        st.booleans(),
        st.sampled_from([None, 1, 2]),
    ),
    st.builds(lambda low: {"type": "string", "minLength": low, "maxLength": low + 5}, st.integers(0, 50)),
    st.builds(
        lambda f: {"type": "string", "format": f}, st.sampled_from(["date-time", "date", "email", "uuid", "uri"])
    ),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), min_size=1, max_size=4, unique=True).map(
        lambda values: {"enum": values}
    ),
    st.integers().map(lambda value: {"const": value}),
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
    return st.one_of(
        st.builds(
            lambda props, extra, data: {
                "type": "object",
                "properties": props,
                "required": data.draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else [],
                "additionalProperties": extra,
            },
            st.dictionaries(names, children, max_size=4),
            st.one_of(st.booleans(), children),
            st.data(),
        ),
        st.builds(
            lambda items, low: {"type": "array", "items": items, "minItems": low},
            children,
            st.integers(0, 4),
        ),
        st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
        children.map(lambda child: {"anyOf": [child, {"type": "null"}]}),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_LEAF, _extend, max_leaves=20), st.booleans())
def test_every_generated_value_validates(schema, referenced):
    valid({"$defs": {"x": schema}, "$ref": "#/$defs/x"} if referenced else schema)


def test_the_schema_a_prompt_gives_is_the_last_one_written():
    example = '{"properties": {"foo": {"type": "array", "items": {"type": "string"}}}, "required": ["foo"]}'
    real = json.dumps(Address.model_json_schema())
    prompt = (
        f'As an example, for the schema {example} the object {{"foo": ["bar"]}} is well formatted.\n```\n{real}\n```'
    )
    messages = [{"role": "system", "content": prompt}, {"role": "user", "content": [{"type": "text", "text": "Hi {"}]}]
    assert schema_in(messages) == Address.model_json_schema()
    assert schema_in([{"role": "user", "content": "no schema {here}"}]) is None
    assert schema_in("not messages") is None


@pytest.mark.parametrize(
    "pattern",
    [r"^\d{3}-\d{4}$", r"^[A-Z]{2}\d+$", r"[^a-z0-9]+", r"^(foo|bar)baz?$", r"^\w+@\w+\.com$", r"^[^\s@]+@[^\s@]+$"],
)
def test_a_string_matches_its_pattern(pattern):
    valid({"type": "string", "pattern": pattern})


@pytest.mark.parametrize("pattern", [r"(?=x)a", r"(a)\1", r"((a{64}){64}){64}", "[", "a" * 2000])
def test_a_pattern_it_cannot_answer_for_sure_leaves_a_plain_string(pattern):
    assert isinstance(value_for({"type": "string", "pattern": pattern}), str)


class Coded(pydantic.BaseModel):
    code: str = pydantic.Field(pattern=r"^[A-Z]{3}-\d{2}$")


def test_a_pydantic_pattern_passes_pydantic():
    Coded.model_validate(valid(to_strict_json_schema(Coded)))
