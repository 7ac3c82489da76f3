"""OpenAI's bounds on chat request parameters: a value out of range is a 400 naming it, in OpenAI's words.

The bounds are those OpenAI's API reference states for `CreateChatCompletionRequest` (`n` 1-128,
`temperature` 0-2, `top_p` 0-1, the penalties -2..2, `top_logprobs` 0-20, `seed` a 64-bit integer,
`logit_bias` values -100..100, at most 4 `stop` sequences and 128 `functions`, `metadata`'s 16 pairs of
64/512 characters, `safety_identifier`'s 64 characters, at least one message) plus `max_tokens` and
`max_completion_tokens` at least 1 (what OpenAI answers for 0) and within 64 bits (so that no upstream's
integer overflows). JSON Schema's `integer` is any number without a fraction, so `n: 1.0` is accepted as
OpenAI accepts it, and `n: 1.5` is OpenAI's `invalid_type`. Messages and codes are OpenAI's own
(`integer_above_max_value`, `decimal_below_min_value`, ...). Every other field is left to the upstream.

`check_parameters()` runs on the body decoded as plain JSON values, before anything is forwarded: what
it accepts reaches the upstream byte for byte (`1.0` stays `1.0`), and the typed view sees integers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.wire.errors import InvalidRequestError

__all__ = ["check_parameters"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SHOWN = 40
"""A client's value is echoed in a message up to this many characters."""


@dataclass(frozen=True, slots=True)
class _Range:
    """A number's bounds; `integer` ones take integer-valued JSON numbers only (1 and 1.0, not 1.5)."""

    integer: bool
    low: int | float
    high: int | float


_RANGES: Mapping[str, _Range] = {
    "n": _Range(integer=True, low=1, high=128),
    "top_logprobs": _Range(integer=True, low=0, high=20),
    "seed": _Range(integer=True, low=_INT64_MIN, high=_INT64_MAX),
    "max_tokens": _Range(integer=True, low=1, high=_INT64_MAX),
    "max_completion_tokens": _Range(integer=True, low=1, high=_INT64_MAX),
    "temperature": _Range(integer=False, low=0, high=2),
    "top_p": _Range(integer=False, low=0, high=1),
    "frequency_penalty": _Range(integer=False, low=-2, high=2),
    "presence_penalty": _Range(integer=False, low=-2, high=2),
}
_LOGIT_BIAS = _Range(integer=True, low=-100, high=100)
_KINDS = {str: "a string", bool: "a boolean", dict: "an object", list: "an array", float: "a decimal number"}


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


def _invalid_type(param: str, expected: str, value: object) -> InvalidRequestError:
    got = _KINDS.get(type(value), "an integer")
    message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
    return InvalidRequestError(message, param=param, code="invalid_type")


def _number(param: str, value: object, bounds: _Range) -> int | float:
    """`value` as the number it is (an integer-valued float as an int, for integer bounds), or the error."""
    kind = "integer" if bounds.integer else "decimal"
    if type(value) is bool or not isinstance(value, int | float):
        raise _invalid_type(param, f"an {kind}" if bounds.integer else "a decimal", value)
    if bounds.integer and isinstance(value, float):
        if not value.is_integer():
            raise _invalid_type(param, "an integer", value)
        value = int(value)
    if value < bounds.low:
        raise InvalidRequestError(
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {bounds.low}, "
            f"but got {_shown(value)} instead.",
            param=param,
            code=f"{kind}_below_min_value",
        )
    if value > bounds.high:
        raise InvalidRequestError(
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {bounds.high}, "
            f"but got {_shown(value)} instead.",
            param=param,
            code=f"{kind}_above_max_value",
        )
    return value


def _array(param: str, value: object, low: int, high: int) -> None:
    """An array's length within `low`..`high` (a value that is not an array is the typed view's to judge)."""
    if not isinstance(value, list):
        return
    if not value and low:
        message = (
            f"Invalid '{param}': empty array. Expected an array with minimum length {low}, "
            "but got an empty array instead."
        )
        raise InvalidRequestError(message, param=param, code="empty_array")
    if len(value) > high:
        message = (
            f"Invalid '{param}': array too long. Expected an array with maximum length {high}, "
            f"but got an array with length {len(value)} instead."
        )
        raise InvalidRequestError(message, param=param, code="array_above_max_length")


def _string(param: str, value: object, high: int) -> None:
    if isinstance(value, str) and len(value) > high:
        message = (
            f"Invalid '{param}': string too long. Expected a string with maximum length {high}, "
            f"but got a string with length {len(value)} instead."
        )
        raise InvalidRequestError(message, param=param, code="string_above_max_length")


def _metadata(value: object) -> None:
    """At most 16 pairs, keys of at most 64 characters, values of at most 512 (their type is the typed view's)."""
    if not isinstance(value, dict):
        return
    if len(value) > 16:
        message = (
            "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(value)} properties instead."
        )
        raise InvalidRequestError(message, param="metadata", code="object_above_max_properties")
    for key, item in value.items():
        if len(key) > 64:
            message = (
                f"Invalid property name in 'metadata': '{_shown(key)}' is too long. Expected a string with "
                f"maximum length 64, but got a string with length {len(key)} instead."
            )
            raise InvalidRequestError(message, param="metadata", code="property_name_above_max_length")
        _string(f"metadata.{_shown(key)}", item, 512)


def _logit_bias(value: object) -> None:
    if isinstance(value, dict):
        for token, bias in value.items():
            _number(f"logit_bias.{_shown(token)}", bias, _LOGIT_BIAS)


_SHAPES: Mapping[str, Callable[[object], None]] = {
    "messages": lambda value: _array("messages", value, 1, _INT64_MAX),
    "stop": lambda value: _array("stop", value, 1, 4),
    "functions": lambda value: _array("functions", value, 1, 128),
    "metadata": _metadata,
    "safety_identifier": lambda value: _string("safety_identifier", value, 64),
    "logit_bias": _logit_bias,
}


_CHECKED = frozenset(_RANGES) | frozenset(_SHAPES)


def check_parameters(body: dict[str, Any]) -> None:
    """Check `body`'s bounded parameters (null means unset); integer-valued floats become ints in `body`.

    `body` is the request decoded as plain JSON values, Turnout's own copy: the client's bytes are what is
    forwarded, unchanged.

    Raises:
        InvalidRequestError: a parameter is of the wrong type or out of its range; `param` names it.
    """
    for name in [name for name in body if name in _CHECKED]:  # in the body's order: the first one is named
        value = body[name]
        if value is None:
            continue
        bounds = _RANGES.get(name)
        if bounds is not None:
            body[name] = _number(name, value, bounds)
        else:
            _SHAPES[name](value)
