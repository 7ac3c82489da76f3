"""Embeddings and legacy completions requests, whose input is text or tokens: their typed views, decoded once.

Either endpoint takes a string, an array of strings, an array of token ids (one input, already
tokenised), or an array of token arrays, at most `MAX_INPUTS` entries (embeddings' `input`, completions'
`prompt`); anything else is a 400 naming the parameter, as are `dimensions` below 1, an `encoding_format`
other than `float` or `base64`, and a completion outside OpenAI's bounds (`n`, `temperature`, `seed`, ...,
`max_tokens` from 0, which with `echo` scores a prompt; `logprobs` 0-5; `best_of` 0-20 and at least `n`).
Turnout forwards the body as it came: it only checks it and reads the input's text, the request's question.
The simulated upstream checks what it is sent with the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from proxy.wire.endpoint import Body
from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import decode_json_object
from proxy.wire.parameters import check_parameters
from proxy.wire.schemas import StreamOptions, body_of, typed_view

__all__ = [
    "MAX_INPUTS",
    "CompletionsRequest",
    "EmbeddingsRequest",
    "Inputs",
    "check_inputs",
    "decode_completions_body",
    "decode_embeddings_body",
    "input_text",
]

MAX_INPUTS = 2048
"""OpenAI's limit on an input array's length (`CreateEmbeddingRequest`)."""

Inputs = str | list[str | int | list[int]]
"""What the typed views read an input as (its shape checked by `check_inputs`)."""


def _invalid(param: str, what: str) -> InvalidRequestError:
    message = (
        f"Invalid '{param}': {what}. Expected a string, an array of strings, an array of token ids "
        "(integers) or an array of arrays of token ids."
    )
    return InvalidRequestError(message, param=param, code="invalid_value")


def _empty(param: str, what: str) -> InvalidRequestError:
    message = f"Invalid '{param}': {what} is empty. Expected at least one item."
    return InvalidRequestError(message, param=param, code="empty_array")


def _token_array(param: str, tokens: Sequence[object]) -> None:
    if not tokens:
        raise _empty(param, "a token array")
    if any(type(token) is not int for token in tokens):  # which ids a model knows is the upstream's to say
        raise _invalid(param, "a token id is not an integer")


def check_inputs(value: Inputs, param: str, *, empty_text: bool) -> None:
    """Raise the 400 OpenAI answers when `value` is not one of the four input shapes.

    `empty_text`: whether an empty string is an input (a prompt may be one; an embedding's may not).

    Raises:
        InvalidRequestError: the shape is not one of the four, or an array is empty or longer than `MAX_INPUTS`.
    """
    if isinstance(value, str):
        if not value and not empty_text:  # OpenAI's own refusal, though its schema says nothing of it
            message = f"Invalid '{param}': an empty string. Expected a string with at least one character."
            raise InvalidRequestError(message, param=param, code="empty_string")
        return
    if not value:
        raise _empty(param, "the array")
    if len(value) > MAX_INPUTS:
        message = (
            f"Invalid '{param}': array too long. Expected an array with maximum length {MAX_INPUTS}, "
            f"but got an array with length {len(value)} instead."
        )
        raise InvalidRequestError(message, param=param, code="array_above_max_length")
    first = value[0]
    if isinstance(first, str):
        if not all(isinstance(item, str) for item in value):
            raise _invalid(param, "an array of strings holds something else")
        if not empty_text and not all(value):
            message = f"Invalid '{param}': an empty string. Expected strings of at least one character."
            raise InvalidRequestError(message, param=param, code="empty_string")
    elif isinstance(first, list):
        for item in value:
            if not isinstance(item, list):
                raise _invalid(param, "an array of token arrays holds something else")
            _token_array(param, item)
    else:
        _token_array(param, value)


def input_text(value: Inputs | None) -> str:
    """The text of an input that is one string ("" for strings, or tokens, or none: no one question)."""
    return value if isinstance(value, str) else ""


_MAX_TOKENS = 2**63 - 1


class EmbeddingsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The typed view of `POST /v1/embeddings` that Turnout checks and decides on."""

    model: str
    input: Inputs
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None


class CompletionsRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The typed view of `POST /v1/completions` that Turnout checks and decides on."""

    model: str
    prompt: Inputs | None = None
    """None (or null): OpenAI's default, an empty document (`<|endoftext|>`)."""
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    temperature: float | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=0, le=_MAX_TOKENS)] | None = None
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=5)] | None = None
    best_of: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    echo: bool | None = None
    suffix: str | None = None
    user: str | None = None

    @property
    def wants_usage_chunk(self) -> bool:
        """Whether the caller asked for the final usage chunk of a stream."""
        return bool(self.stream_options and self.stream_options.include_usage)


def _integral(values: dict[str, Any], *names: str) -> None:
    """JSON Schema's integer, as OpenAI reads it: `1.0` is 1 (the body itself is forwarded as it came)."""
    for name in names:
        value = values.get(name)
        if isinstance(value, float) and value.is_integer():
            values[name] = int(value)


def decode_embeddings_body(raw: bytes) -> Body[EmbeddingsRequest]:
    """Decode and check an embeddings request body, once.

    Raises:
        InvalidRequestError: the body is not a JSON object Turnout reads, or a field is missing, of the wrong
            type or out of bounds; `param` names it.
    """
    values = decode_json_object(raw)
    _integral(values, "dimensions")
    request = typed_view(values, EmbeddingsRequest)
    check_inputs(request.input, "input", empty_text=False)
    return body_of(raw, request)


def decode_completions_body(raw: bytes) -> Body[CompletionsRequest]:
    """Decode and check a legacy completions request body, once (`max_tokens` may be 0, unlike chat's).

    Raises:
        InvalidRequestError: the body is not a JSON object Turnout reads, or a field is missing, of the wrong
            type or out of bounds; `param` names it.
    """
    values = decode_json_object(raw)
    max_tokens = values.pop("max_tokens", None)
    check_parameters(values)
    if max_tokens is not None:
        values["max_tokens"] = max_tokens
    _integral(values, "max_tokens", "logprobs", "best_of")
    request = typed_view(values, CompletionsRequest)
    if request.prompt is not None:
        check_inputs(request.prompt, "prompt", empty_text=True)
    if request.best_of is not None and request.n is not None and request.best_of < request.n:
        message = f"Invalid 'best_of': {request.best_of} is below n ({request.n}). Expected best_of >= n."
        raise InvalidRequestError(message, param="best_of", code="integer_below_min_value")
    return body_of(raw, request)
